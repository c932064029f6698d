"""Demo users for ``songkhoe serve --demo``: a commune health worker and a doctor at the first
demo commune's health station, and a programme manager at the province's Department of
Health (``songkhoe.synth.facilities`` ids). Their passwords are new at every demo start and
printed by the CLI, so a demo database never keeps a password someone could reuse."""

from __future__ import annotations

import secrets

from .service import Auth


def demo_users(auth: Auth, province_code: int) -> list[tuple[str, str, str, str]]:
    """Create or reset the demo users: (username, password, role, org) each."""
    from songkhoe.synth.admin import province
    from songkhoe.synth.facilities import station_id

    p = province(province_code)
    station = station_id(p.communes[0].code)
    wanted = [("ytx-demo", "health_worker", station),
              ("bacsi-demo", "doctor", station),
              ("quanly-demo", "programme_manager", f"so-{province_code:02d}")]
    out = []
    for username, role, org in wanted:
        password = secrets.token_urlsafe(9)
        if auth.identities.user(username) is None:
            auth.identities.add_user(username, password, role, org)
        else:
            auth.identities.set_password(username, password)
            auth.identities.set_locked(username, False)
        out.append((username, password, role, org))
    return out
