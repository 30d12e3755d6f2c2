"""Lease rules for the publish step: how long a claim lasts, when to renew it, when it is lost.

A worker claims a publish for a time-to-live and gets a fencing number; it renews the lease
every :func:`heartbeat_interval`. When the lease runs out anyone may claim again and gets a
larger fence, so writes from the old holder (a "zombie") are refused by the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

#: How long a publish lease lasts without a heartbeat. Long enough to ride out a GC pause, a
#: slow database or a busy event loop; short enough that the reconciler (which runs every
#: minute) hands a dead worker's publish to another worker within about two minutes.
PUBLISH_LEASE_TTL = timedelta(seconds=90)
#: How long a publish may sit pending (created, never claimed) before the reconciler dispatches
#: it again; covers a crash between the state change and the enqueue.
PENDING_PUBLISH_GRACE = timedelta(minutes=2)


@dataclass(frozen=True)
class Lease:
    """A claim on one job's publish: who holds it, with which fence, until when."""

    job_id: str
    owner: str
    fence: int
    until: datetime


def lease_deadline(now: datetime, ttl: timedelta) -> datetime:
    """When a lease taken or renewed at ``now`` runs out.

    Raises:
        ValueError: ``ttl`` is not positive.
    """
    if ttl <= timedelta(0):
        raise ValueError(f"a lease needs a positive ttl, got {ttl}")
    return now + ttl


def heartbeat_interval(ttl: timedelta) -> timedelta:
    """How often a holder renews a lease of ``ttl``: a third of it, so two missed beats still keep it."""
    return ttl / 3
