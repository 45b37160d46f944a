"""newsq: news ingestion — feeds → fetch → clean → dedup → store.

The stage logic lives here in plain, Celery-free packages, one per stage:
`feeds`, `fetch`, `clean`, `dedup`, `store`. The Celery tasks in `tasks/` are thin
wrappers around them; `config/` parses settings; `workers/` starts processes.

The Python API (``newsq.enqueue``, ``status``, ``wait``, ``extract``, ``events``; see
:mod:`newsq.api`) is loaded on first use, so ``import newsq`` loads neither Celery
nor the extractor.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from newsq.api import enqueue, events, extract, status, wait
    from newsq.config.settings import Settings
    from newsq.errors import NewsqError
    from newsq.feeds.intake import Intake
    from newsq.records import Article, Drop

__version__ = "0.1.0"
__all__ = [
    "Article",
    "Drop",
    "Intake",
    "NewsqError",
    "Settings",
    "__version__",
    "enqueue",
    "events",
    "extract",
    "status",
    "wait",
]

_HOMES = {
    "enqueue": "newsq.api",
    "status": "newsq.api",
    "wait": "newsq.api",
    "extract": "newsq.api",
    "events": "newsq.api",
    "Intake": "newsq.feeds.intake",
    "Article": "newsq.records",
    "Drop": "newsq.records",
    "Settings": "newsq.config.settings",
    "NewsqError": "newsq.errors",
}


def __getattr__(name: str) -> Any:  # PEP 562: the API's modules load when first used
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'newsq' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
