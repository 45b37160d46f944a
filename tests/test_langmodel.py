"""py3langid's model kept decompressed in the cache folder (newsq.clean.langmodel)."""

from __future__ import annotations

from pathlib import Path

import pytest
from py3langid.langid import MODEL_FILE, LanguageIdentifier

from newsq.clean import langmodel

SAMPLES = (
    "The council voted on Tuesday to close the old bridge to traffic for the winter.",
    "Le conseil municipal a voté mardi la fermeture du vieux pont pour l'hiver.",
    "Der Stadtrat hat am Dienstag beschlossen, die alte Brücke im Winter zu sperren.",
    "El ayuntamiento votó el martes cerrar el viejo puente durante el invierno.",
)


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "newsq"


def test_the_cached_model_gives_what_the_packaged_file_gives(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packaged = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    first = langmodel.read_identifier()  # reads the packaged file, writes the cache
    assert [p.name for p in cache.iterdir()] == [langmodel._model_folder(
        langmodel.MODEL_DIR / MODEL_FILE).name]  # fmt: skip

    def no_decompression(_path: object) -> None:
        raise AssertionError("the packaged model was read again")

    monkeypatch.setattr(langmodel, "load_model", no_decompression)
    cached = langmodel.read_identifier()
    for text in SAMPLES:
        assert first.classify(text) == packaged.classify(text)
        assert cached.classify(text) == packaged.classify(text)
        assert cached.rank(text)[:5] == packaged.rank(text)[:5]


def test_a_damaged_cache_falls_back_to_the_packaged_file(cache: Path) -> None:
    folder = langmodel._model_folder(langmodel.MODEL_DIR / MODEL_FILE)
    folder.mkdir(parents=True)
    (folder / "ptc.npy").write_bytes(b"not an array")
    assert langmodel.read_identifier().classify(SAMPLES[1])[0] == "fr"


def test_an_unwritable_cache_still_reads_the_model(cache: Path) -> None:
    cache.parent.mkdir(exist_ok=True)
    cache.write_text("a file where the folder would be")
    assert langmodel.read_identifier().classify(SAMPLES[2])[0] == "de"
