"""What a worker does first: garbage collection held off through its start, and what it
reads without the GIL, in threads beside its imports and start: py3langid's model, the
fetchers' TLS context.

Its own module so that ``newsq worker`` (``workers.commands``) and ``newsq run``'s
prestarted workers (``workers.prestart``) can start it without importing each other.
"""

from __future__ import annotations

import gc
import importlib
import threading

_paused = False  # collection is off because pause_gc turned it off


def pause_gc() -> None:
    """No garbage collection through a start: until the worker is ready
    (``workers.worker._freeze_gc``), the run's or the intake's input is being read
    (:func:`resume_gc`), or the command returns. The start's imports make ~180,000
    objects that all live and leave almost no garbage; each collection among them walks
    them again (~15 % of the prestart's preload)."""
    global _paused
    gc.disable()
    _paused = True


def resume_gc() -> None:
    """After :func:`pause_gc` (else nothing: a caller's own setting stays): what the
    start made frozen out of collection, which resumes; the first collection would
    otherwise walk all of it."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


def read_language_model() -> threading.Thread:
    """Import the metadata step and read py3langid's model in a thread: its file reads
    and LZMA decompression (without the GIL) go on beside the caller's imports and
    start, on the other core; a page that needs the model waits for it."""

    def read() -> None:
        importlib.import_module("newsq.clean.metadata").language_identifier()

    thread = threading.Thread(target=read, name="newsq-langid", daemon=True)
    thread.start()
    return thread


def make_tls_context() -> threading.Thread:
    """Make the fetchers' TLS context (``newsq.fetch.client.tls_context``) in a thread:
    loading the CA bundle (~20 ms, without the GIL) goes on beside the caller's
    imports. Join it before forking: a fork must not copy OpenSSL mid-load."""

    def make() -> None:
        importlib.import_module("newsq.fetch.client").tls_context()

    thread = threading.Thread(target=make, name="newsq-tls", daemon=True)
    thread.start()
    return thread
