"""assignments.answered_at: when the pair's answer was stored (None while it is open).

The answer path sets it with a conditional UPDATE of the assignment row and the release of
abandoned pairs deletes only rows where it is still None, so the two take the same row lock:
on PostgreSQL (READ COMMITTED) a release that meets an answer in flight waits for it, re-reads
the row and leaves it alone; an answer that meets a release in flight finds the row gone and
is refused. Existing rows take the time of their current answer.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        batch.add_column(sa.Column("answered_at", sa.Float(), nullable=True))
    op.execute(
        "UPDATE assignments SET answered_at = (SELECT a.answered_at FROM answers a "
        "WHERE a.query_id = assignments.query_id AND a.annotator_id = assignments.annotator_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        batch.drop_column("answered_at")
