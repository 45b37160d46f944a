"""The store: SQLAlchemy 2 Core over SQLite or PostgreSQL.

``database`` (schema, writes, reads; Alembic ``migrations``), ``export`` (JSON Lines,
CSV, Parquet, streamed) and ``warc`` (the raw pages of exported articles).
"""
