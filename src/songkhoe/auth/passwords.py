"""Password hashing (argon2id, RFC 9106 via ``argon2-cffi``) and the sign-in throttle.

Throttle (OWASP Authentication Cheat Sheet, "Account lockout"): after ``free_failures``
consecutive failures each further attempt must wait ``base_delay * 2**(n - free_failures)``
seconds (capped at ``max_delay``) after the last failure — an attempt inside that window is
refused without even checking the password — and after ``lock_after`` failures the account is
locked until an administrator unlocks it (``songkhoe user unlock``). A success resets the
count. Time comes from an injectable clock so tests need no sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

Clock = Callable[[], float]
_HASHER = PasswordHasher()  # argon2id, RFC 9106 "second recommended" parameters
MIN_LENGTH = 10


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_strength(password: str) -> None:
    """Raise ValueError naming the rule a new password breaks."""
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password needs at least {MIN_LENGTH} characters "
                         f"(this one has {len(password)})")


@dataclass(frozen=True)
class Throttle:
    free_failures: int = 3
    base_delay: float = 1.0
    max_delay: float = 300.0
    lock_after: int = 10

    def wait(self, failures: int, last_failure: float | None, now: float) -> float:
        """Seconds still to wait before the next attempt is even considered (0: go ahead)."""
        if failures < self.free_failures or last_failure is None:
            return 0.0
        delay = min(self.base_delay * 2 ** (failures - self.free_failures), self.max_delay)
        return max(0.0, last_failure + delay - now)

    def locks(self, failures: int) -> bool:
        return failures >= self.lock_after


def system_clock() -> float:
    return time.time()
