"""Where each stage of a job sits on the one overall progress bar a user watches.

The overall bar is split into bands, one per stage, in the order a job moves through them::

    starting     0 ─  5   download weights, load the model, cache latents
    training     5 ─ 95   the trainer's own step bar
    publishing  95 ─ 99   uploading the weights and card to the Hub
    verifying   99 ─ 100  checking the Hub holds what we sent

Training gets nearly all of the bar because it takes nearly all of the time. Bands touch end
to start, so the overall percent never decreases while stages advance in this order, whatever
the percent reported inside each stage.
"""

from __future__ import annotations

import math

#: The stages of a job, in the order they happen.
STAGES: tuple[str, ...] = ("starting", "training", "publishing", "verifying")

#: Each stage's share of the overall bar, as (start, end) in percent.
STAGE_BANDS: dict[str, tuple[float, float]] = {
    "starting": (0.0, 5.0),
    "training": (5.0, 95.0),
    "publishing": (95.0, 99.0),
    "verifying": (99.0, 100.0),
}


def stage_index(stage: str) -> int:
    """Position of ``stage`` in :data:`STAGES`.

    Raises:
        ValueError: ``stage`` is not one of :data:`STAGES`.
    """
    try:
        return STAGES.index(stage)
    except ValueError:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}") from None


def overall_percent(stage: str, stage_percent: float | None) -> float:
    """Map progress inside one stage to the overall 0–100 bar.

    Args:
        stage: one of :data:`STAGES`.
        stage_percent: progress through that stage, 0–100. ``None`` (unknown) and NaN count
            as the start of the stage; values outside 0–100 are clamped.

    Returns:
        The overall percent, within the stage's band of :data:`STAGE_BANDS`.

    Raises:
        ValueError: ``stage`` is not one of :data:`STAGES`.
    """
    stage_index(stage)
    start, end = STAGE_BANDS[stage]
    if stage_percent is None or math.isnan(stage_percent):
        fraction = 0.0
    else:
        fraction = min(1.0, max(0.0, stage_percent / 100.0))
    return min(end, start + (end - start) * fraction)
