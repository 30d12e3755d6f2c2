"""How long a rented machine has run for a job, from the times its trainer handle records (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any


def billed_seconds(handle: Mapping[str, Any], now: datetime) -> float:
    """The finished running spells (``billed_s``) plus the current one (since ``running_since``, else
    ``launched_at``), none while the machine is released (a stopped pod bills no GPU time)."""
    since = handle.get("running_since", handle.get("launched_at")) if not handle.get("released") else None
    current = (now - datetime.fromisoformat(str(since))).total_seconds() if since else 0.0
    return round(float(handle.get("billed_s") or 0.0) + max(0.0, current), 1)
