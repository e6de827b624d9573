"""README's configuration table gives every numeric setting's range, as start-up enforces it.

An operator sets these from README alone. Eleven rows gave none: `CALLS_MAX_ACTIVE=0`, as
"no cap" is often written, stopped start-up; `CLAIM_LEASE_S=5` was taken, but a webhook
delivery's claim held 20 s whatever it said. The bounds are read from the code's own refusal of
a value past them, never from a list kept here.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from common.settings import Settings, SettingsError, settings_from_env, variable
from tests.test_docs import configuration_table

_BOUNDS = re.compile(r"(?:between|from) (-?[\d.e+]+) (?:and|to) (-?[\d.e+]+)")


def refused_bounds(name: str) -> tuple[str, str] | None:
    """The bounds start-up names when `name` is given a value far below any (None: it takes
    no number)."""
    for value in ("-99999999999", "-1e300"):  # an integer's and a number's
        try:
            settings_from_env({name: value}, config_file_read=False)
        except SettingsError as exc:
            found = _BOUNDS.search(str(exc))
            if found is not None:
                return found.group(1), found.group(2)
    return None


NUMERIC = [
    name
    for name in (variable(item.name) for item in dataclasses.fields(Settings))
    if refused_bounds(name) is not None
]


def test_the_numeric_settings_are_found() -> None:
    assert {"PORT", "CALLS_MAX_ACTIVE", "CLAIM_LEASE_S", "REAPER_INTERVAL_S"} <= set(NUMERIC)


@pytest.mark.parametrize("name", NUMERIC)
def test_the_readme_row_gives_the_range_start_up_enforces(name: str) -> None:
    bounds = refused_bounds(name)
    assert bounds is not None
    low, high = bounds
    row = re.sub(r"(?<=\d),(?=\d{3})", "", configuration_table()[name])  # 1,000,000
    said = (f"{low} to {high}", f"{low}-{high}", f"between {low} and {high}", f"at most {high}")
    assert any(text in row for text in said), f"README's {name} row gives no range {low}-{high}"


def test_the_claim_lease_row_says_a_delivery_is_held_longer() -> None:
    from common.notify.deliveries import REQUEST_TIMEOUT_S

    held = REQUEST_TIMEOUT_S + 5  # DeliveryWorker's floor under CLAIM_LEASE_S
    assert f"at least {held:g} s" in configuration_table()["CLAIM_LEASE_S"]
