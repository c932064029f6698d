"""The random streams of the generator: ``random.Random`` with cheaper draws.

Generating a million people takes tens of millions of draws, and ``random.Random``'s
``gauss``, ``randrange`` and ``choice`` are written in Python around the C core. ``Stream``
replaces them with one C call each: normal deviates come from a table of 2¹⁶ quantiles of the
standard normal distribution (indexed by 16 random bits; the table spans ±4.3 σ), integers
from ``random() * n``. Streams are seeded with strings (SHA-512 of the seed, as
``random.seed`` does for ``str``), so they are the same in every process and every run.
"""

from __future__ import annotations

import random
from statistics import NormalDist
from typing import Any

_BITS = 16
_NORMAL = tuple(NormalDist().inv_cdf((k + 0.5) / (1 << _BITS)) for k in range(1 << _BITS))


class Stream(random.Random):
    def gauss(self, mu: float = 0.0, sigma: float = 1.0) -> float:
        return mu + sigma * _NORMAL[self.getrandbits(_BITS)]

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        if stop is None:
            return int(self.random() * start)
        if step == 1:
            return start + int(self.random() * (stop - start))
        return start + step * int(self.random() * ((stop - start + step - 1) // step))

    def choice(self, seq: Any) -> Any:
        return seq[int(self.random() * len(seq))]
