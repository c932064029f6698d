"""Password hashing and the sign-in throttle (back-off, then lockout), on a fake clock."""

from __future__ import annotations

import pytest

from songkhoe.auth import AuthError
from songkhoe.auth.passwords import Throttle, hash_password, verify_password

from .conftest import PASSWORD


def test_argon2_hash_verifies_only_the_right_password() -> None:
    h = hash_password("mật khẩu rất dài")
    assert h.startswith("$argon2id$")
    assert verify_password(h, "mật khẩu rất dài")
    assert not verify_password(h, "mat khau rat dai")
    assert not verify_password("not a hash", "x")
    assert hash_password("same") != hash_password("same")  # salted


def test_passwords_are_never_stored_in_clear(auth, doctor) -> None:
    row = auth.db.one("SELECT password_hash FROM auth_users WHERE username = ?", (doctor,))
    assert PASSWORD not in row[0] and row[0].startswith("$argon2id$")


def test_short_password_refused(auth) -> None:
    with pytest.raises(ValueError, match="at least 10"):
        auth.identities.add_user("x", "short", "doctor")


def test_unknown_role_refused(auth) -> None:
    with pytest.raises(ValueError, match="unknown role"):
        auth.identities.add_user("x", PASSWORD, "wizard")


def test_throttle_delays_grow_and_cap() -> None:
    t = Throttle(free_failures=3, base_delay=1, max_delay=10, lock_after=99)
    assert t.wait(2, 100.0, 100.0) == 0
    assert t.wait(3, 100.0, 100.0) == 1
    assert t.wait(4, 100.0, 100.5) == 1.5
    assert t.wait(10, 100.0, 100.0) == 10


def test_back_off_then_lockout(auth, clock, doctor) -> None:
    ids = auth.identities
    for _ in range(3):
        with pytest.raises(AuthError, match="wrong username or password"):
            ids.authenticate(doctor, "wrong password!")
    # the 4th attempt inside the back-off window is refused without checking the password
    with pytest.raises(AuthError, match="try again in"):
        ids.authenticate(doctor, PASSWORD)
    clock.advance(1.01)
    with pytest.raises(AuthError, match="wrong"):
        ids.authenticate(doctor, "wrong password!")  # 4 failures: now 2 s
    clock.advance(1.5)
    with pytest.raises(AuthError, match="try again"):
        ids.authenticate(doctor, PASSWORD)
    clock.advance(0.6)
    with pytest.raises(AuthError, match="wrong"):
        ids.authenticate(doctor, "wrong password!")  # 5
    clock.advance(5)
    with pytest.raises(AuthError, match="now locked"):
        ids.authenticate(doctor, "wrong password!")  # 6: locked
    clock.advance(10_000)
    with pytest.raises(AuthError, match="locked"):
        ids.authenticate(doctor, PASSWORD)
    ids.set_locked(doctor, False)
    assert ids.authenticate(doctor, PASSWORD).username == doctor


def test_success_resets_the_count(auth, clock, doctor) -> None:
    ids = auth.identities
    for _ in range(3):
        with pytest.raises(AuthError):
            ids.authenticate(doctor, "wrong password!")
    clock.advance(2)
    ids.authenticate(doctor, PASSWORD)
    assert ids.user(doctor).failures == 0


def test_unknown_user_gets_the_same_answer(auth) -> None:
    with pytest.raises(AuthError, match="wrong username or password"):
        auth.identities.authenticate("nobody", PASSWORD)
