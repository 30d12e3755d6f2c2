"""How repeated failed sign-ins slow an attacker down: per user and address, per user, per address.

Each key allows a number of failures, then locks for a period that doubles with every further
failure up to a cap; a key forgets its failures after an hour without one. While any of a sign-in's
keys is locked, the password is not even checked, so a locked key gives no answer to guess against.
The per-user limit is higher than the per-(user, address) one, so an attacker elsewhere can lock a
user out for at most :data:`MAX_LOCK` at a time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hubferry.store.accounts import Failures

#: Failures allowed per key kind before it locks.
THRESHOLDS = {"pair": 5, "user": 20, "ip": 50}
#: The first lock; each further failure doubles it.
FIRST_LOCK = timedelta(seconds=30)
#: The longest lock.
MAX_LOCK = timedelta(minutes=15)
#: A key's failures are forgotten after this long without one.
FORGET_AFTER = timedelta(hours=1)


def keys_for(username: str, address: str) -> list[str]:
    """The throttling keys of a sign-in attempt."""
    username, address = username[:128], address[:64]  # the key column holds 300 characters
    return [f"pair:{username}|{address}", f"user:{username}", f"ip:{address}"]


def after_failure(key: str, before: Failures | None, now: datetime) -> Failures:
    """The failures of ``key`` once one more has happened at ``now``."""
    count = 1 if before is None or now - before.last_failed_at > FORGET_AFTER else before.count + 1
    over = count - THRESHOLDS[key.split(":", 1)[0]]
    locked_until = now + min(FIRST_LOCK * 2 ** min(over, 16), MAX_LOCK) if over >= 0 else None
    return Failures(count, now, locked_until)


def locked_for(failures: dict[str, Failures], now: datetime) -> timedelta | None:
    """How long the longest current lock among ``failures`` lasts, or None."""
    remaining = [f.locked_until - now for f in failures.values() if f.locked_until and f.locked_until > now]
    return max(remaining) if remaining else None
