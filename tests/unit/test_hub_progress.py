"""Sizes and transfer rates as people read them, and the push progress bar."""

from __future__ import annotations

import pytest

from hubferry.cli.push import PushBar
from hubferry.hub.progress import PushProgress, TransferRate, format_size


@pytest.mark.parametrize(("size", "text"), [
    (0, "0 bytes"), (1, "1 byte"), (999, "999 bytes"), (1000, "1.0 kB"), (15_700_000, "15.7 MB"),
    (1_048_576_245, "1.0 GB"), (2 * 1024**3, "2.1 GB"), (999_960_000, "1.0 GB"), (5 * 10**15, "5.0 PB"),
])
def test_sizes_are_humanised_in_decimal_units(size, text):
    assert format_size(size) == text


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_after_a_fast_upload_is_the_average_not_the_last_trickle():
    """15.7 MB in one tick, then 371 bytes of commit a second later read "371 bytes/s" before."""
    clock = Clock()
    bar = PushBar(enabled=False, clock=clock)
    total = 15_700_000 + 371
    bar(PushProgress("uploading", 0, total, 0, 2))
    clock.now += 0.1
    fields = bar.fields(PushProgress("uploading", 15_700_000, total, 1, 2))
    assert fields["sizes"] == "15.7 MB/15.7 MB"
    clock.now += 1.0
    done = bar.fields(PushProgress("committing", total, total, 2, 2))
    clock.now += 30.0
    later = bar.fields(PushProgress("done", total, total, 2, 2))
    assert done["rate"] == later["rate"]  # frozen once everything is sent
    rate = float(done["rate"].split()[0])
    assert done["rate"].endswith("MB/s") and 10 <= rate <= 160, done


def test_rate_is_blank_until_bytes_move_and_time_left_is_shown_while_uploading():
    clock = Clock()
    rate = TransferRate(clock)
    assert rate.text() == ""
    rate.update(0)
    clock.now += 2
    rate.update(4_000_000)
    assert rate.text() == "2.0 MB/s"
    bar = PushBar(enabled=False, clock=clock)
    bar.fields(PushProgress("uploading", 0, 10_000_000, 0, 1))
    clock.now += 1
    assert bar.fields(PushProgress("uploading", 2_000_000, 10_000_000, 0, 1))["left"] == "4 s left"
