"""py3langid's model, kept decompressed in a cache folder after its first read.

py3langid ships its model LZMA-compressed (4.6 MB, 68 MB of arrays): every process
that reads it spends about half a second of CPU decompressing the same bytes. The
first read writes the arrays as ``.npy`` files under ``$XDG_CACHE_HOME/newsq`` (else
``~/.cache/newsq``), in a folder named for py3langid's version and the model file's
size and time; later reads map them from there. A cache that cannot be written or read
leaves the packaged file as the source: the identifier is the same either way.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from array import array
from importlib.metadata import version
from pathlib import Path

import numpy as np
from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier
from py3langid.modelio import load_model

LOGGER = logging.getLogger(__name__)

_ARRAYS = ("ptc", "pc", "classes", "nextmove", "row", "output")
_TYPECODE = {2: "H", 4: "I", 8: "L"}


def cache_root() -> Path:
    """Where newsq keeps files it can make again (``$XDG_CACHE_HOME/newsq``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "newsq"


def _model_folder(source: Path) -> Path:
    stat = source.stat()
    name = f"py3langid-{version('py3langid')}-{stat.st_size}-{stat.st_mtime_ns}"
    return cache_root() / name


def _write(folder: Path, model: tuple[object, ...]) -> None:
    """The arrays of ``model`` in ``folder``, made whole in a temporary folder beside it
    and renamed into place, so a reader never sees half a model."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".model-", dir=folder.parent))
    except OSError as exc:  # no cache folder here: the next process decompresses again
        LOGGER.info("language model not cached in %s: %s", folder.parent, exc)
        return
    try:
        for name, value in zip(_ARRAYS, model, strict=True):
            np.save(staging / f"{name}.npy", np.asarray(value), allow_pickle=False)
        os.rename(staging, folder)
    except OSError:  # another process renamed its copy first, or no room: theirs or none
        shutil.rmtree(staging, ignore_errors=True)


def _to_array(values: np.ndarray) -> array[int]:
    out: array[int] = array(_TYPECODE[values.dtype.itemsize])
    out.frombytes(np.ascontiguousarray(values).data.cast("B"))
    return out


def _read(folder: Path) -> tuple[object, ...]:
    """The model's arrays from ``folder``: the big score table mapped, not copied."""
    data = {n: np.load(folder / f"{n}.npy", mmap_mode="r", allow_pickle=False) for n in _ARRAYS}
    return (data["ptc"], np.array(data["pc"]), data["classes"].tolist(),
            _to_array(data["nextmove"]), _to_array(data["row"]),
            data["output"].tolist())  # fmt: skip


def read_identifier() -> LanguageIdentifier:
    """py3langid's identifier on its own model (normalised probabilities), from the cache
    when a copy is there, else from the packaged file, caching it for the next process."""
    source = MODEL_DIR / MODEL_FILE
    folder = _model_folder(source)
    model: tuple[object, ...] | None = None
    if folder.is_dir():
        try:
            model = _read(folder)
        except (OSError, ValueError) as exc:  # damaged: read the packaged file instead
            LOGGER.warning("language model cache %s not read: %s", folder, exc)
    if model is None:
        model = load_model(source)
        _write(folder, model)
    ptc, pc, classes, nextmove, row, output = model
    return LanguageIdentifier(ptc, pc, classes, nextmove, output, norm_probs=True, tk_row=row)
