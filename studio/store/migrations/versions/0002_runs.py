"""Training runs, their metrics, checkpoints, control flags, samples and device locks.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("dataset_version_id", sa.Integer, sa.ForeignKey("dataset_versions.id"), nullable=False),
        sa.Column("model_ref", sa.String(500), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("heartbeat_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("error_tail", sa.Text, nullable=True),
        sa.Column("output_dir", sa.String(500), nullable=False),
        sa.Column("resume_from", sa.String(500), nullable=True),
        sa.Column("steps_done", sa.Integer, nullable=False),
        sa.Column("total_steps", sa.Integer, nullable=False),
        sa.Column("best_val_loss", sa.Float, nullable=True),
        sa.Column("created_by", sa.String(200), nullable=True),
    )
    for table, columns in {
        "metrics": [sa.Column("step", sa.Integer, nullable=False), sa.Column("name", sa.String(64), nullable=False),
                    sa.Column("value", sa.Float, nullable=False), sa.Column("at", TS, nullable=False)],
        "checkpoints": [sa.Column("step", sa.Integer, nullable=False), sa.Column("path", sa.String(500), nullable=False),
                        sa.Column("is_adapter", sa.Boolean, nullable=False), sa.Column("val_loss", sa.Float, nullable=True),
                        sa.Column("created_at", TS, nullable=False)],
        "control_flags": [sa.Column("kind", sa.String(16), nullable=False), sa.Column("requested_at", TS, nullable=False),
                          sa.Column("handled_at", TS, nullable=True)],
        "run_samples": [sa.Column("step", sa.Integer, nullable=False), sa.Column("prompt", sa.Text, nullable=False),
                        sa.Column("seed", sa.Integer, nullable=False), sa.Column("text", sa.Text, nullable=True),
                        sa.Column("path", sa.String(500), nullable=True), sa.Column("at", TS, nullable=False)],
    }.items():
        op.create_table(table, sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False, index=True), *columns)
    op.create_table(
        "device_locks",
        sa.Column("device_set", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("locked_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("device_locks", "run_samples", "control_flags", "checkpoints", "metrics", "runs"):
        op.drop_table(table)
