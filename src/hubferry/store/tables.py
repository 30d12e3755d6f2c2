"""The job database's tables, as SQLAlchemy Core metadata (the schema itself is created by Alembic)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

metadata = sa.MetaData()

#: JSON everywhere; JSONB on PostgreSQL so contexts can be indexed and compared.
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no timezone support, so values are stored as
    naive UTC in SQLAlchemy's fixed-width text format, which keeps ``<`` comparisons correct.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: store timezone-aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("trainer", sa.String(64), nullable=False),
    sa.Column("params", JSONType, nullable=False),
    sa.Column("dataset", sa.Text, nullable=False),
    sa.Column("repo_id", sa.String(200), nullable=False),
    sa.Column("repo_auto_named", sa.Boolean, nullable=False),
    sa.Column("private", sa.Boolean, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    # Bumped by every state change, so a compare-and-set cannot be fooled by A→B→A.
    sa.Column("state_version", sa.Integer, nullable=False),
    sa.Column("stage", sa.String(64)),
    sa.Column("percent", sa.Float),
    sa.Column("step", sa.Integer),
    sa.Column("total_steps", sa.Integer),
    sa.Column("loss", sa.Float),
    sa.Column("eta_seconds", sa.Float),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("error", JSONType),
    sa.Column("repo_url", sa.Text),
    sa.Column("commit_sha", sa.String(64)),
    sa.Column("output_dir", sa.Text),
    sa.Column("log_path", sa.Text),
    sa.Column("trainer_handle", JSONType),
    sa.Column("observed_at", UTCDateTime),
    sa.Column("log_cursor", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False),
    # The seq of the job's newest event; incrementing it serialises appends per job.
    sa.Column("last_event_seq", sa.Integer, nullable=False),
    sa.Index("ix_jobs_owner_created", "owner", "created_at"),
    sa.Index("ix_jobs_state", "state"),
)

job_events = sa.Table(
    "job_events",
    metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("stage", sa.String(64)),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("context", JSONType, nullable=False),
)

publishes = sa.Table(
    "publishes",
    metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("lease_owner", sa.String(200)),
    sa.Column("lease_until", UTCDateTime),
    # Incremented by every claim and never reset: writes carrying an older fence are refused.
    sa.Column("fence", sa.Integer, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("repo_url", sa.Text),
    sa.Column("commit_sha", sa.String(64)),
    sa.Column("error", JSONType),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("last_claimed_at", UTCDateTime),
    sa.Index("ix_publishes_state_lease", "state", "lease_until"),
)

#: Provider webhook deliveries already handled (a repeated ``webhook-id`` is ignored).
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("provider", sa.String(32), primary_key=True),
    sa.Column("delivery_id", sa.String(200), primary_key=True),
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
)
