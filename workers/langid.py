"""py3langid's model read in a thread, beside a worker's imports and start.

Its own module so that ``newsq worker`` (``workers.commands``) and ``newsq run``'s
prestarted workers (``workers.prestart``) can start it without importing each other.
"""

from __future__ import annotations

import importlib
import threading


def read_language_model() -> threading.Thread:
    """Import the metadata step and read py3langid's model in a thread: its file reads
    and LZMA decompression (without the GIL) go on beside the caller's imports and
    start, on the other core; a page that needs the model waits for it."""

    def read() -> None:
        importlib.import_module("newsq.clean.metadata").language_identifier()

    thread = threading.Thread(target=read, name="newsq-langid", daemon=True)
    thread.start()
    return thread
