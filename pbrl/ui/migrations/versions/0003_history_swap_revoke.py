"""Undo keeps history (``undone_answers``), left/right randomisation (``swapped`` on
assignments and answers), token revocation (``tokens.revoked_at``).

Existing rows were all shown a-left, b-right: ``swapped`` is false for them.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("revoked_at", sa.Float(), nullable=True))
    for table in ("assignments", "answers"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("swapped", sa.Boolean(), nullable=False, server_default=sa.false())
            )
    op.create_table(
        "undone_answers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("answer_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("query_id", sa.Integer(), nullable=False),
        sa.Column("annotator_id", sa.Integer(), nullable=False),
        sa.Column("prefer_b", sa.Float(), nullable=True),
        sa.Column("skipped", sa.Boolean(), nullable=False),
        sa.Column("swapped", sa.Boolean(), nullable=False),
        sa.Column("shown_at", sa.Float(), nullable=False),
        sa.Column("answered_at", sa.Float(), nullable=False),
        sa.Column("latency_s", sa.Float(), nullable=False),
        sa.Column("undone_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["annotator_id"], ["tokens.id"]),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.ForeignKeyConstraint(["query_id"], ["queries.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_undone_answers_project_annotator",
        "undone_answers",
        ["project_id", "annotator_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_undone_answers_query_id"), "undone_answers", ["query_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_undone_answers_query_id"), table_name="undone_answers")
    op.drop_index("ix_undone_answers_project_annotator", table_name="undone_answers")
    op.drop_table("undone_answers")
    for table in ("answers", "assignments"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("swapped")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("revoked_at")
