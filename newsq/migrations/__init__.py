"""Alembic migrations of the store's schema (run by ``newsq.store.ensure_schema``)."""
