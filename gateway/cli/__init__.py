"""The ``ringfence`` command: set-up, policies, users, keys, audit export, the mail worker,
and ``doctor`` (which asks a running replica whether it is at the database's revision)."""
