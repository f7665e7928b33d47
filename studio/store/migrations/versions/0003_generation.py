"""Generation: sample sets, their samples, and saved prompt sets.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sample_sets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("base_model", sa.String(500), nullable=False),
        sa.Column("variants", sa.JSON, nullable=False),
        sa.Column("prompts", sa.JSON, nullable=False),
        sa.Column("references", sa.JSON, nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("seeds", sa.JSON, nullable=False),
        sa.Column("samples_per_prompt", sa.Integer, nullable=False),
        sa.Column("source", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("created_by", sa.String(200), nullable=True),
    )
    op.create_table(
        "generated_samples",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("set_id", sa.Integer, sa.ForeignKey("sample_sets.id"), nullable=False, index=True),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("run_id", sa.Integer, nullable=True),
        sa.Column("checkpoint_step", sa.Integer, nullable=True),
        sa.Column("prompt_index", sa.Integer, nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("sample_index", sa.Integer, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=True),
        sa.Column("path", sa.String(500), nullable=True),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("flags", sa.JSON, nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "prompt_sets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("prompts", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("prompt_sets", "generated_samples", "sample_sets"):
        op.drop_table(table)
