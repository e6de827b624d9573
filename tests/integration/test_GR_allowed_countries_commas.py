"""CALLS_ALLOWED_COUNTRIES of commas alone stops start-up, rather than allow every country.

`CALLS_ALLOWED_COUNTRIES=${FIRST},${SECOND}` in a compose file or a deployment template, both
variables unset, reaches the server as `,`. It was read as empty, which means every country:
the list set to narrow whom the server may call was gone, and the server started without a word
(a call to +34 went through under a list meant to hold US and CA).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import SettingsError, settings_from_env
from tests.integration.test_startup import run_server


@pytest.mark.parametrize("value", [",", " , ", ",,,", ", ,"])
def test_commas_without_a_region_are_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="^CALLS_ALLOWED_COUNTRIES holds commas but no region"):
        settings_from_env({"CALLS_ALLOWED_COUNTRIES": value})


def test_a_list_with_a_trailing_comma_and_an_empty_value_still_start() -> None:
    assert settings_from_env({"CALLS_ALLOWED_COUNTRIES": "us, ca,"}).calls_allowed_countries == (
        "US",
        "CA",
    )
    assert settings_from_env({"CALLS_ALLOWED_COUNTRIES": " "}).calls_allowed_countries == ()


def test_the_server_stops_with_one_line(tmp_path: Path) -> None:
    done = run_server(tmp_path, CALLS_ALLOWED_COUNTRIES=",", CALLS_DB_PATH="/dev/null")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "configuration error: CALLS_ALLOWED_COUNTRIES holds commas but no region (','): name the"
        " regions that may be called (US,CA), or leave it empty to allow every country"
    ]
