"""A pod's billed time: running spells add up, a stopped pod adds nothing, a resumed one counts again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hubferry.domain.billing import billed_seconds

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_running_spells_add_up_and_a_stopped_pod_bills_nothing() -> None:
    handle = {"launched_at": T0.isoformat()}
    assert billed_seconds(handle, T0 + timedelta(minutes=10)) == 600
    stopped = {**handle, "released": "stopped", "billed_s": 600.0, "running_since": None}
    assert billed_seconds(stopped, T0 + timedelta(hours=5)) == 600
    resumed = {**stopped, "released": None, "running_since": (T0 + timedelta(hours=5)).isoformat()}
    assert billed_seconds(resumed, T0 + timedelta(hours=5, minutes=1)) == 660
