"""Bodies: bounded decompression and charset decoding.

Decompression never produces more than the byte cap plus one chunk, whatever the input
ratio (a gzip bomb stops at the cap). Charset decoding tries, in order: the
Content-Type charset, a ``<meta charset>`` / ``http-equiv`` declaration, a detected
charset, then UTF-8 with replacement characters. A page whose declared charset is wrong
or unknown keeps its text. A declared name is looked up in the WHATWG encoding label list
only (:func:`charset_codec`), so a server cannot name ``zlib``, ``base64`` or ``idna``.
"""

from __future__ import annotations

import codecs
import re
import zlib
from email.message import Message

import webencodings

from newsq import errors


class BodyError(Exception):
    """The body cannot be accepted; ``reason`` is a contract code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


ACCEPT_ENCODING = "gzip, deflate"
_DETECT_MIN_BYTES = 2048
_OUTPUT_STEP = 256 * 1024  # largest piece one decompress call may return


class BoundedDecoder:
    """Undo a Content-Encoding chunk by chunk, refusing output beyond ``limit`` bytes.

    :meth:`feed` and :meth:`flush` raise :class:`BodyError` (``too_large`` past the cap,
    ``decode_error`` for a corrupt stream or an encoding we did not ask for).
    """

    def __init__(self, content_encoding: str | None, limit: int) -> None:
        encoding = (content_encoding or "identity").strip().lower()
        self.limit = limit
        self.total = 0
        self._deflate_probe = False
        self._zlib: zlib._Decompress | None
        if encoding in ("", "identity"):
            self._zlib = None
        elif encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj()
            self._deflate_probe = True  # some servers send raw deflate without the header
        else:
            raise BodyError(errors.DECODE_ERROR, f"unsupported Content-Encoding {encoding!r}")

    def _count(self, piece: bytes) -> bytes:
        self.total += len(piece)
        if self.total > self.limit:
            raise BodyError(errors.TOO_LARGE, f"body exceeds {self.limit} bytes")
        return piece

    def feed(self, data: bytes) -> list[bytes]:
        """The decoded pieces of ``data``."""
        if self._zlib is None:
            return [self._count(data)]
        pieces: list[bytes] = []
        try:
            while data:
                piece = self._zlib.decompress(data, _OUTPUT_STEP)
                self._deflate_probe = False
                if piece:
                    pieces.append(self._count(piece))
                data = self._zlib.unconsumed_tail
        except zlib.error as exc:
            if self._deflate_probe:
                self._deflate_probe = False
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.feed(data)
            raise BodyError(errors.DECODE_ERROR, f"corrupt compressed body: {exc}") from None
        return pieces

    def flush(self) -> bytes:
        """What is left in the decompressor at the end of the body."""
        if self._zlib is None:
            return b""
        try:
            return self._count(self._zlib.flush())
        except zlib.error as exc:
            raise BodyError(errors.DECODE_ERROR, f"corrupt compressed body: {exc}") from None


def media_type(content_type: str | None) -> tuple[str | None, str | None]:
    """(media type, charset) of a Content-Type header value; (None, None) when absent."""
    if not content_type:
        return None, None
    # A media type is ASCII; the email parser raises on a lone surrogate, so no
    # other character reaches it.
    content_type = content_type.encode("ascii", "replace").decode("ascii")
    msg = Message()
    msg["content-type"] = content_type
    mtype = msg.get_content_type().lower() if "/" in content_type.split(";")[0] else None
    charset = msg.get_param("charset")
    return mtype, charset.strip().strip("'\"") if isinstance(charset, str) else None


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_HTML_START = re.compile(
    rb"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head)\b", re.I | re.S
)


def looks_like_html(body: bytes) -> bool:
    """True when a body without a Content-Type starts like an HTML document."""
    head = body[:2048].lstrip(codecs.BOM_UTF8)
    return bool(_HTML_START.match(head)) or b"<body" in head.lower()


def meta_charset(body: bytes) -> str | None:
    """The charset a ``<meta>`` tag in the first 4 kB declares, if any."""
    match = _META_CHARSET.search(body[:4096])
    return match.group(1).decode("ascii", "replace") if match else None


def charset_codec(label: str | None) -> webencodings.Encoding | None:
    """The WHATWG encoding a charset label names; None for unknown labels and for the
    "replacement" encoding (labels of charsets browsers refuse to decode)."""
    if not label or not label.isascii():  # every label is ASCII; this spares webencodings
        return None  # a lone surrogate, which it cannot lower-case
    encoding = webencodings.lookup(label)
    if encoding is None or encoding.name == "replacement":
        return None
    return encoding


def _mostly_text(text: str) -> bool:
    if not text:
        return True
    bad = sum(1 for c in text[:20000] if c == "\ufffd" or (c < " " and c not in "\t\n\r\f"))
    return bad / min(len(text), 20000) < 0.1


def decode_html(body: bytes, header_charset: str | None) -> tuple[str, str]:
    """(text, charset used) of an HTML body.

    Raises :class:`BodyError` (``decode_error``) only when no charset gives mostly text,
    e.g. binary data served as text/html.
    """
    if body.startswith(codecs.BOM_UTF8):
        return body[3:].decode("utf-8", "replace"), "utf-8"
    for candidate in (charset_codec(header_charset), charset_codec(meta_charset(body))):
        if candidate is None:
            continue
        try:
            return candidate.codec_info.decode(body)[0], candidate.name
        except UnicodeDecodeError:
            continue  # declared charset is wrong: fall through to detection
    guess = _detect(body)
    text = body.decode(guess, "replace")
    if not _mostly_text(text):
        raise BodyError(errors.DECODE_ERROR, "body is not text in any charset")
    return text, guess


def _detect(body: bytes) -> str:
    try:
        body.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    # Detection is unreliable on a few hundred bytes; there the web's usual
    # mislabelled charset, windows-1252, is the better bet.
    if len(body) >= _DETECT_MIN_BYTES:
        try:
            from charset_normalizer import from_bytes

            best = from_bytes(body[:200_000]).best()
            # charset_normalizer names only text codecs of Python's own
            if best is not None and _try(body[:0], best.encoding):
                return best.encoding
        except ImportError:  # pragma: no cover - httpx normally brings it
            pass
    return "cp1252" if _try(body, "cp1252") else "utf-8"


def _try(body: bytes, charset: str) -> bool:
    try:
        body.decode(charset)
        return True
    except (UnicodeDecodeError, LookupError):
        return False
