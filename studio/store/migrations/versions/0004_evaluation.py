"""Evaluation: blind rating assignments (what each rater was shown, and on which side) and their votes.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "rating_assignments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("set_id", sa.Integer, sa.ForeignKey("sample_sets.id"), nullable=False, index=True),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("rater", sa.String(200), nullable=False),
        sa.Column("session", sa.String(200), nullable=True),
        sa.Column("item_key", sa.String(64), nullable=False),
        sa.Column("prompt_index", sa.Integer, nullable=False),
        sa.Column("sample_index", sa.Integer, nullable=False),
        sa.Column("left_sample_id", sa.Integer, sa.ForeignKey("generated_samples.id"), nullable=False),
        sa.Column("right_sample_id", sa.Integer, sa.ForeignKey("generated_samples.id"), nullable=True),
        sa.Column("repeat", sa.Integer, nullable=False),
        sa.Column("assigned_at", TS, nullable=False),
        sa.Column("shown_at", TS, nullable=False),
        sa.UniqueConstraint("set_id", "mode", "rater", "item_key", "repeat"),
    )
    op.create_table(
        "rating_votes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("assignment_id", sa.Integer, sa.ForeignKey("rating_assignments.id"), nullable=False,
                  unique=True),
        sa.Column("set_id", sa.Integer, sa.ForeignKey("sample_sets.id"), nullable=False, index=True),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("rater", sa.String(200), nullable=False),
        sa.Column("session", sa.String(200), nullable=True),
        sa.Column("choice", sa.String(16), nullable=False),
        sa.Column("score", sa.Integer, nullable=True),
        sa.Column("winner_sample_id", sa.Integer, nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("shown_at", TS, nullable=False),
        sa.Column("decided_at", TS, nullable=False),
        sa.Column("decision_seconds", sa.Float, nullable=False),
        sa.Column("played", sa.JSON, nullable=True),
        sa.Column("flags", sa.JSON, nullable=True),
        sa.Column("repeat", sa.Integer, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    for table in ("rating_votes", "rating_assignments"):
        op.drop_table(table)
