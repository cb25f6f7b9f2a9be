"""queries.shown: how many annotators a query went to, claimed by a conditional UPDATE so that
concurrent requests never give a query to more than ``per_query`` people.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("queries") as batch:
        batch.add_column(sa.Column("shown", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE queries SET shown = (SELECT COUNT(*) FROM assignments "
        "WHERE assignments.query_id = queries.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("queries") as batch:
        batch.drop_column("shown")
