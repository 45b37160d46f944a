"""newsq: news ingestion — feeds → fetch → clean → dedup → store.

The stage logic lives here in plain, Celery-free modules, one per stage:
`feeds`, `fetch`, `clean`, `dedup`, `store`. The Celery tasks in `tasks/` are thin
wrappers around them; `config/` parses settings; `workers/` starts processes.
"""

__version__ = "0.1.0"
