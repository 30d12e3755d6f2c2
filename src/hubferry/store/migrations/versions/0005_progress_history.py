"""Progress history (a loss curve per job), outgoing notification targets and deliveries, and an index
on ``jobs.updated_at`` for "what changed since" reads.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "job_progress",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        _ts("at", nullable=False),
        sa.Column("stage", sa.String(64)),
        sa.Column("percent", sa.Float),
        sa.Column("step", sa.Integer),
        sa.Column("total_steps", sa.Integer),
        sa.Column("loss", sa.Float),
        sa.Index("ix_job_progress_job", "job_id", "id"),
    )
    op.create_table(
        "notify_targets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE")),
        sa.Column("url", sa.Text, nullable=False),
        _ts("created_at", nullable=False),
        sa.Index("ix_notify_targets_owner", "owner"),
        sa.Index("ix_notify_targets_job", "job_id"),
    )
    op.create_table(
        "notify_deliveries",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("target_id", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event_seq", sa.Integer, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("payload", _JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        _ts("next_at"),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("log", _JSON, nullable=False),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.UniqueConstraint("target_id", "job_id", "event_seq", name="uq_notify_deliveries_event"),
        sa.Index("ix_notify_deliveries_due", "state", "next_at"),
        sa.Index("ix_notify_deliveries_job", "job_id", "created_at"),
    )
    op.create_index("ix_jobs_updated", "jobs", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_updated", table_name="jobs")
    op.drop_table("notify_deliveries")
    op.drop_table("notify_targets")
    op.drop_table("job_progress")
