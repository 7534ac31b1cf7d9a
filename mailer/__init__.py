"""Outgoing email: the Celery app and tasks, messages and templates, SMTP transport.

Reached from ``gateway`` only through :class:`gateway.notifier.Notifier`; everything
that crosses into this package is plain data.
"""
