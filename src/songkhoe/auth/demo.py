"""Demo users for ``songkhoe serve --demo``: a commune health worker and a doctor at the first
demo commune's health station, a programme manager at the province's Department of Health
(``songkhoe.synth.facilities`` ids) and, when the station manages Patients, a citizen
(``congdan-demo``) speaking for the first Patient registered there (found through the store's
search, ``Patient?organization=``). Their passwords are new at every demo start and printed by
the CLI, so a demo database never keeps a password someone could reuse."""

from __future__ import annotations

import secrets
from typing import Any

from .identities import CITIZEN
from .service import Auth

CITIZEN_USERNAME = "congdan-demo"


def demo_users(auth: Auth, province_code: int) -> list[tuple[str, str, str, str]]:
    """Create or reset the demo users: (username, password, role, org) each — for the
    citizen, ``Patient/<id>`` in place of the Organization id."""
    from songkhoe.synth.admin import province
    from songkhoe.synth.facilities import station_id

    p = province(province_code)
    station = station_id(p.communes[0].code)
    wanted = [("ytx-demo", "health_worker", station),
              ("bacsi-demo", "doctor", station),
              ("quanly-demo", "programme_manager", f"so-{province_code:02d}")]
    out = []
    for username, role, org in wanted:
        password = _reset(auth, username, role, org=org)
        out.append((username, password, role, org))
    patient = first_patient(auth.store, station)
    if patient is not None:
        password = _reset(auth, CITIZEN_USERNAME, CITIZEN, patient=patient)
        out.append((CITIZEN_USERNAME, password, CITIZEN, f"Patient/{patient}"))
    return out


def first_patient(store: Any, org: str) -> str | None:
    """The id of the first Patient (in registration order) managed by Organization ``org``."""
    page = store.search("Patient", [("organization", f"Organization/{org}"), ("_count", "1")])
    return page.matches[0].id if page.matches else None


def _reset(auth: Auth, username: str, role: str, *, org: str | None = None,
           patient: str | None = None) -> str:
    """Create the account, or give it a new password, unlock it and relink its Patient."""
    password = secrets.token_urlsafe(9)
    user = auth.identities.user(username)
    if user is None:
        auth.identities.add_user(username, password, role, org, patient=patient)
    else:
        auth.identities.set_password(username, password)
        auth.identities.set_locked(username, False)
        if patient is not None and user.patient != patient:
            auth.identities.set_patient(username, patient)
    return password
