"""Server-assigned logical ids: time-ordered, so new rows land at the end of B-tree indexes.

26 characters of lowercase base32hex (RFC 4648 §7, whose alphabet sorts like the values):
48 bits of milliseconds then 80 random bits. Within the R4 id pattern
``[A-Za-z0-9\\-\\.]{1,64}`` (http://hl7.org/fhir/R4/datatypes.html#id).
"""

from __future__ import annotations

import base64
import os
import time


def new_id() -> str:
    raw = (time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10)
    return base64.b32hexencode(raw).decode("ascii")[:26].lower()
