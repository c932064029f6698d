"""Data-quality faults of real registers, added on request (``--faults``).

- Missing values: a measurement not recorded (``MISSING_OBSERVATION`` of check-up
  Observations are left out), no phone number (``MISSING_PHONE``), and for people born before
  1960 only the year of birth (``YEAR_ONLY_BIRTH``) — common where the exact date was never
  registered.
- Duplicate registrations (``DUPLICATE``): the person registered a second time at another
  facility, the name typed without diacritics or with a one-letter slip, often without the
  citizen ID, sometimes with day and month of birth swapped. Every duplicate is listed in the
  ground-truth file for identity matching (``duplicates.csv``).

The rates are modelling assumptions chosen to exercise data-quality checks and identity
matching, not measured figures. Faults draw from their own random stream, so the population
with faults is the population without them plus the faults.
"""

from __future__ import annotations

import random
from typing import Any

from . import names

MISSING_OBSERVATION = 0.02
MISSING_PHONE = 0.05
YEAR_ONLY_BIRTH = 0.03
DUPLICATE = 0.01
DUPLICATE_KEEPS_CCCD = 0.4
DUPLICATE_SWAPS_DAY_MONTH = 0.1

TRUTH_HEADER = b"duplicate,original,fault,facility\n"


def patient(rng: random.Random, resource: dict[str, Any]) -> None:
    """Missing phone, year-only birth date: applied in place."""
    if "telecom" in resource and rng.random() < MISSING_PHONE:
        del resource["telecom"]
    if resource["birthDate"] < "1960" and rng.random() < YEAR_ONLY_BIRTH:
        resource["birthDate"] = resource["birthDate"][:4]


def duplicate(rng: random.Random, original: dict[str, Any], new_id: str, facility: str
              ) -> tuple[dict[str, Any], str]:
    """A second registration of ``original`` at ``facility``, and the fault made in its name."""
    dup = {k: v for k, v in original.items() if k not in ("name", "identifier")}
    dup["id"] = new_id
    dup["managingOrganization"] = {"reference": f"Organization/{facility}"}
    name = original["name"][0]
    if rng.random() < 0.5:
        fault = "no-diacritics"
        family = names.strip_diacritics(name["family"])
        given = [names.strip_diacritics(g) for g in name["given"]]
    else:
        fault = "typo"
        family, given = name["family"], list(name["given"])
        k = rng.randrange(len(given) + 1)
        if k == len(given):
            family = names.typo(rng, family)
        else:
            given[k] = names.typo(rng, given[k])
    dup["name"] = [{"use": "official", "text": names.full_name(family, given), "family": family,
                    "given": given}]
    identifiers = [i for i in original["identifier"] if i["type"]["coding"][0]["code"] == "SB"]
    if rng.random() < DUPLICATE_KEEPS_CCCD:
        identifiers = original["identifier"]
    dup["identifier"] = identifiers
    birth = original["birthDate"]
    if len(birth) == 10 and int(birth[8:]) <= 12 and rng.random() < DUPLICATE_SWAPS_DAY_MONTH \
            and birth[5:7] != birth[8:]:
        dup["birthDate"] = f"{birth[:4]}-{birth[8:]}-{birth[5:7]}"
        fault += "+day-month-swapped"
    if "telecom" in dup and rng.random() < 0.4:
        del dup["telecom"]
    return dup, fault


def truth_line(dup_id: str, original_id: str, fault: str, facility: str) -> bytes:
    return f"Patient/{dup_id},Patient/{original_id},{fault},Organization/{facility}\n".encode()
