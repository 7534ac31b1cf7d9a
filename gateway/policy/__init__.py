"""Roles and permissions as code (``policies/``): loading and validation, the policy tests,
and the version of the folder that is applied."""
