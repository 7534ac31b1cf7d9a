"""The database: the ORM models (the source of truth), engines and sessions, and the
Alembic migrations that own the schema."""
