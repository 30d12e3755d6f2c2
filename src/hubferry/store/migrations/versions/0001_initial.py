"""Jobs, their event timeline, and publish leases.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("trainer", sa.String(64), nullable=False),
        sa.Column("params", _JSON, nullable=False),
        sa.Column("dataset", sa.Text, nullable=False),
        sa.Column("repo_id", sa.String(200), nullable=False),
        sa.Column("repo_auto_named", sa.Boolean, nullable=False),
        sa.Column("private", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_version", sa.Integer, nullable=False),
        sa.Column("stage", sa.String(64)),
        sa.Column("percent", sa.Float),
        sa.Column("step", sa.Integer),
        sa.Column("total_steps", sa.Integer),
        sa.Column("loss", sa.Float),
        sa.Column("eta_seconds", sa.Float),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        _ts("started_at"),
        _ts("finished_at"),
        sa.Column("error", _JSON),
        sa.Column("repo_url", sa.Text),
        sa.Column("commit_sha", sa.String(64)),
        sa.Column("output_dir", sa.Text),
        sa.Column("log_path", sa.Text),
        sa.Column("pid", sa.Integer),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_event_seq", sa.Integer, nullable=False),
    )
    op.create_index("ix_jobs_owner_created", "jobs", ["owner", "created_at"])
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_table(
        "job_events",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        _ts("at", nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("stage", sa.String(64)),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("context", _JSON, nullable=False),
    )
    op.create_table(
        "publishes",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("lease_owner", sa.String(200)),
        _ts("lease_until"),
        sa.Column("fence", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("repo_url", sa.Text),
        sa.Column("commit_sha", sa.String(64)),
        sa.Column("error", _JSON),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        _ts("last_claimed_at"),
    )
    op.create_index("ix_publishes_state_lease", "publishes", ["state", "lease_until"])


def downgrade() -> None:
    op.drop_table("publishes")
    op.drop_table("job_events")
    op.drop_table("jobs")
