"""Vietnamese-first text handling: NFC normalisation on input and diacritic-folded search keys.

Search keys follow FHIR R4 string search (http://hl7.org/fhir/R4/search.html#string): matching
is case- and accent-insensitive. Đ/đ has no Unicode decomposition, so it is folded explicitly.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

_EXTRA_FOLDS = str.maketrans({"đ": "d", "Đ": "d", "ð": "d", "ø": "o", "ł": "l", "ß": "ss"})


def nfc(text: str) -> str:
    """The NFC form of ``text`` (cheap when it is already NFC)."""
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


@lru_cache(maxsize=65536)  # names, displays and units repeat across millions of resources
def fold(text: str) -> str:
    """A search key: lower case, no diacritics, Đ→d, whitespace collapsed.

    >>> fold("Đặng Thị Ngọc  Ánh")
    'dang thi ngoc anh'
    """
    decomposed = unicodedata.normalize("NFD", text.translate(_EXTRA_FOLDS))
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().translate(_EXTRA_FOLDS).split())
