"""Remote trainings: when a job was last observed and how much of its log was read; webhook deliveries seen.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("observed_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("log_cursor", sa.Text))
    op.create_table(
        "webhook_deliveries",
        sa.Column("provider", sa.String(32), primary_key=True),
        sa.Column("delivery_id", sa.String(200), primary_key=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("log_cursor")
        batch.drop_column("observed_at")
