"""segments.dataset: the dataset a segment's (episode, start) refer to when it is not the
project's own: the data a training loop posted its queries from (``post_queries`` with a
dataset; ``pbrl.ui.queue``). None for the project's own segments (every existing row).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("segments") as batch:
        batch.add_column(sa.Column("dataset", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("segments") as batch:
        batch.drop_column("dataset")
