"""The initial schema of the labeling UI (pbrl/ui/db.py).

Revision ID: 0001
Revises:
Create Date: 2026-12-03 18:23:12.892446
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("dataset", sa.Text(), nullable=False),
        sa.Column("dataset_id", sa.Text(), nullable=False),
        sa.Column("dataset_path", sa.Text(), nullable=True),
        sa.Column("task_id", sa.Text(), nullable=True),
        sa.Column("fingerprint", sa.String(length=80), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("selector", sa.String(length=32), nullable=False),
        sa.Column("segment", sa.Integer(), nullable=False),
        sa.Column("n_queries", sa.Integer(), nullable=False),
        sa.Column("per_query", sa.Integer(), nullable=False),
        sa.Column("n_gold", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("fps", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "segments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("episode", sa.Integer(), nullable=False),
        sa.Column("start", sa.Integer(), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("video", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_segments_project_id"), "segments", ["project_id"], unique=False)
    op.create_index(op.f("ix_segments_video"), "segments", ["video"], unique=False)
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.Boolean(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "name"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index(op.f("ix_tokens_project_id"), "tokens", ["project_id"], unique=False)
    op.create_table(
        "queries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("seg_a", sa.Integer(), nullable=False),
        sa.Column("seg_b", sa.Integer(), nullable=False),
        sa.Column("gold", sa.Boolean(), nullable=False),
        sa.Column("gold_prefer_b", sa.Float(), nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("annotator_id", sa.Integer(), nullable=True),
        sa.Column("created", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["annotator_id"],
            ["tokens.id"],
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
        ),
        sa.ForeignKeyConstraint(
            ["seg_a"],
            ["segments.id"],
        ),
        sa.ForeignKeyConstraint(
            ["seg_b"],
            ["segments.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_queries_annotator_id"), "queries", ["annotator_id"], unique=False)
    op.create_index(op.f("ix_queries_project_id"), "queries", ["project_id"], unique=False)
    op.create_table(
        "answers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("query_id", sa.Integer(), nullable=False),
        sa.Column("annotator_id", sa.Integer(), nullable=False),
        sa.Column("prefer_b", sa.Float(), nullable=True),
        sa.Column("skipped", sa.Boolean(), nullable=False),
        sa.Column("shown_at", sa.Float(), nullable=False),
        sa.Column("answered_at", sa.Float(), nullable=False),
        sa.Column("latency_s", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["annotator_id"],
            ["tokens.id"],
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
        ),
        sa.ForeignKeyConstraint(
            ["query_id"],
            ["queries.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("query_id", "annotator_id"),
    )
    op.create_index(
        "ix_answers_project_annotator", "answers", ["project_id", "annotator_id"], unique=False
    )
    op.create_index(op.f("ix_answers_query_id"), "answers", ["query_id"], unique=False)
    op.create_table(
        "assignments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("query_id", sa.Integer(), nullable=False),
        sa.Column("annotator_id", sa.Integer(), nullable=False),
        sa.Column("shown_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["annotator_id"],
            ["tokens.id"],
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
        ),
        sa.ForeignKeyConstraint(
            ["query_id"],
            ["queries.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("query_id", "annotator_id"),
    )
    op.create_index(
        op.f("ix_assignments_annotator_id"), "assignments", ["annotator_id"], unique=False
    )
    op.create_index(op.f("ix_assignments_project_id"), "assignments", ["project_id"], unique=False)
    op.create_index(op.f("ix_assignments_query_id"), "assignments", ["query_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_assignments_query_id"), table_name="assignments")
    op.drop_index(op.f("ix_assignments_project_id"), table_name="assignments")
    op.drop_index(op.f("ix_assignments_annotator_id"), table_name="assignments")
    op.drop_table("assignments")
    op.drop_index(op.f("ix_answers_query_id"), table_name="answers")
    op.drop_index("ix_answers_project_annotator", table_name="answers")
    op.drop_table("answers")
    op.drop_index(op.f("ix_queries_project_id"), table_name="queries")
    op.drop_index(op.f("ix_queries_annotator_id"), table_name="queries")
    op.drop_table("queries")
    op.drop_index(op.f("ix_tokens_project_id"), table_name="tokens")
    op.drop_table("tokens")
    op.drop_index(op.f("ix_segments_video"), table_name="segments")
    op.drop_index(op.f("ix_segments_project_id"), table_name="segments")
    op.drop_table("segments")
    op.drop_table("projects")
