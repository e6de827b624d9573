"""The campaign pacing grid (pure)."""

from common.campaigns.scheduler import next_slot


def test_a_late_call_keeps_the_grid_and_a_campaign_behind_does_not_burst() -> None:
    assert next_slot(0.0, 100.0, 0.5) == 100.5  # the first call starts the grid
    assert next_slot(100.5, 100.52, 0.5) == 101.0  # 20 ms late: the next slot stays put
    assert next_slot(101.0, 105.0, 0.5) == 105.5  # 4 s behind: a new grid from now
    slots, slot, now = [], 0.0, 10.0
    for _ in range(100):  # placing as fast as allowed, a little late each time
        slot = next_slot(slot, now, 0.1)
        slots.append(now)
        now = slot + 0.003
    assert all(b - a >= 0.1 - 1e-9 for a, b in zip(slots[1:], slots[2:], strict=False))
    assert abs((len(slots) - 2) / (slots[-1] - slots[1]) - 10.0) < 0.01  # exactly 10/s
