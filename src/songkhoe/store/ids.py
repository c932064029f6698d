"""Server-assigned logical ids: time-ordered, so new rows land at the end of B-tree indexes.

26 characters of Crockford-style lowercase base32 (48 bits of milliseconds + 80 random bits),
within the R4 id pattern ``[A-Za-z0-9\\-\\.]{1,64}`` (http://hl7.org/fhir/R4/datatypes.html#id).
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id() -> str:
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))
