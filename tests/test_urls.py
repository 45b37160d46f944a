from __future__ import annotations

import pytest

from newsq.urls import InvalidURL, normalize


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "HTTP://Example.COM:80/a/b?utm_source=x&b=2&a=1&fbclid=z#frag",
            "http://example.com/a/b?a=1&b=2",
        ),
        ("https://example.com:443", "https://example.com/"),
        ("https://example.com/x?gclid=abc&id=7", "https://example.com/x?id=7"),
        ("http://127.0.0.1:8080/a?b=1&utm_medium=2", "http://127.0.0.1:8080/a?b=1"),
    ],
)
def test_normalize_folds_spellings_of_one_page(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["ftp://example.com/x", "http:///nohost", "javascript:alert(1)", "", "http://x/" + "a" * 3000],
)
def test_normalize_rejects_what_cannot_be_fetched(raw: str) -> None:
    with pytest.raises(InvalidURL):
        normalize(raw)
