"""Redis replies as text: newsq's clients keep ``decode_responses`` off (page bodies
and sketches are bytes), so strings come back as bytes."""

from __future__ import annotations


def text(value: bytes | str) -> str:
    """``value`` as ``str`` (UTF-8), whichever the client returned."""
    return value.decode() if isinstance(value, bytes) else value
