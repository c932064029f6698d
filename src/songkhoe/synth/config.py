"""What to generate: population size, seed, places, years of check-ups, coverage, faults."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

DEFAULT_AS_OF = date(2026, 11, 1)


@dataclass(frozen=True)
class SynthConfig:
    """A synthetic population and its records; the same config gives the same bytes.

    ``provinces``: new (post-2025) province codes, empty for all 34; ``communes_per_province``
    keeps only that many communes of each (a demo). ``years`` of yearly check-ups end the day
    before ``as_of``; each adult is examined in a year with probability ``coverage``. People
    on treatment are followed up every ``follow_up_days`` (WHO HEARTS default: 28 days).
    ``faults`` adds data-quality faults (missing values, duplicate registrations).
    ``consent_permit``/``consent_deny``: shares of adults with a research Consent that permits
    or denies research use (``synth.consent``; 0 and 0 by default, ``consent.ILLUSTRATIVE``
    for demos).
    """

    people: int
    seed: int = 1
    provinces: tuple[int, ...] = ()
    communes_per_province: int | None = None
    years: int = 1
    coverage: float = 0.8
    as_of: date = DEFAULT_AS_OF
    faults: bool = False
    follow_up_days: int = 28
    chunk: int = 1000  # people per unit of work; part of the output's identity (RNG streams)
    consent_permit: float = 0.0
    consent_deny: float = 0.0

    def __post_init__(self) -> None:
        if self.people < 0:
            raise ValueError(f"people must be ≥ 0, not {self.people}")
        if self.years < 1:
            raise ValueError(f"years must be ≥ 1, not {self.years}")
        if not 0.0 <= self.coverage <= 1.0:
            raise ValueError(f"coverage must be between 0 and 1, not {self.coverage}")
        if self.follow_up_days < 7:
            raise ValueError(f"follow_up_days must be ≥ 7, not {self.follow_up_days}")
        if self.seed < 0:
            raise ValueError(f"seed must be ≥ 0, not {self.seed}")
        if not (0.0 <= self.consent_permit <= 1.0 and 0.0 <= self.consent_deny <= 1.0
                and self.consent_permit + self.consent_deny <= 1.0 + 1e-9):
            raise ValueError(f"consent_permit and consent_deny must be shares between 0 and 1 "
                             f"that add up to at most 1, not {self.consent_permit} and "
                             f"{self.consent_deny}")

    @property
    def tag(self) -> str:
        """Prefix of every person-level id: populations of different seeds never collide."""
        return f"s{self.seed}"

    @property
    def chunks(self) -> int:
        return (self.people + self.chunk - 1) // self.chunk
