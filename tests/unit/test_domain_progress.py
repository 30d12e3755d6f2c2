"""The overall progress bar: stage bands, clamping, and never going back as stages advance."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubferry.domain.progress import STAGE_BANDS, STAGES, overall_percent, stage_index


def test_stages_are_in_job_order_and_bands_cover_the_bar_end_to_end():
    assert STAGES == ("starting", "training", "publishing", "verifying")
    assert STAGE_BANDS["starting"][0] == 0.0
    assert STAGE_BANDS["verifying"][1] == 100.0
    for earlier, later in zip(STAGES, STAGES[1:], strict=False):
        assert STAGE_BANDS[earlier][1] == STAGE_BANDS[later][0]


@pytest.mark.parametrize(
    ("stage", "stage_percent", "expected"),
    [
        ("starting", 0, 0.0),
        ("starting", 100, 5.0),
        ("training", 0, 5.0),
        ("training", 50, 50.0),
        ("training", 100, 95.0),
        ("publishing", 50, 97.0),
        ("verifying", 100, 100.0),
    ],
)
def test_stage_percent_maps_into_its_band(stage, stage_percent, expected):
    assert overall_percent(stage, stage_percent) == pytest.approx(expected)


def test_unknown_percent_is_the_start_of_the_stage_and_out_of_range_is_clamped():
    assert overall_percent("training", None) == 5.0
    assert overall_percent("training", float("nan")) == 5.0
    assert overall_percent("training", -20) == 5.0
    assert overall_percent("training", 250) == 95.0


def test_unknown_stage_is_rejected_by_name():
    with pytest.raises(ValueError, match="uploading"):
        overall_percent("uploading", 10)
    with pytest.raises(ValueError):
        stage_index("done")


percents = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))


@given(st.lists(st.tuples(st.sampled_from(STAGES), percents), min_size=1, max_size=30))
def test_overall_is_in_range_and_monotone_over_ordered_stages(steps):
    ordered = sorted(steps, key=lambda item: stage_index(item[0]))
    previous_stage, best_in_stage, previous_overall = None, None, 0.0
    for stage, raw in ordered:
        if stage != previous_stage:
            previous_stage, best_in_stage = stage, None
        # A tracker reports the best percent so far within a stage; feed the same here.
        if raw is not None and raw == raw:
            best_in_stage = raw if best_in_stage is None else max(best_in_stage, raw)
        value = overall_percent(stage, best_in_stage)
        assert 0.0 <= value <= 100.0
        assert value >= previous_overall
        previous_overall = value


@given(st.sampled_from(STAGES[:-1]), percents, percents)
def test_any_point_of_a_stage_is_below_any_point_of_the_next(stage, a, b):
    later = STAGES[stage_index(stage) + 1]
    assert overall_percent(stage, a) <= overall_percent(later, b)
