"""Alembic migrations of the store's schema (run by ``newsq.store.database.ensure_schema``)."""
