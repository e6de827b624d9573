"""signer_behind: a token signed ahead is ahead whatever its delay; one signed behind is taken
as behind only as far as the signer's tokens have consistently said (a late one alone is no
clock behind)."""

from __future__ import annotations

from common.livekit.skew import signer_behind


def test_a_token_late_on_its_way_alone_moves_nothing() -> None:
    assert signer_behind(1000.0, 1003.5) == 0.0
    assert signer_behind(1000.0, 1003.5, consistent=0) == 0.0


def test_behind_is_taken_as_far_as_the_tokens_agree() -> None:
    assert signer_behind(1000.0, 1123.4, consistent=120) == 120.0
    assert signer_behind(1000.0, 1005.0, consistent=120) == 5.0  # never past this one's


def test_ahead_is_taken_whatever_the_evidence() -> None:
    assert signer_behind(1030.0, 1000.0) == -30.0


def test_within_tolerance_or_unsigned_nothing() -> None:
    assert signer_behind(1000.0, 1001.5, consistent=120) == 0.0
    assert signer_behind(None, 1000.0, consistent=120) == 0.0
