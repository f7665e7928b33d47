"""Placement on a device pool: ``device_claims`` (one row per device held) replaces ``device_locks`` (one lock for the
whole machine), and runs say where they run, through which launcher, and what a queued run waits for. Tasks record
the machine their worker runs on (``host``): its pid means something there only.

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
RUN_COLUMNS = (("devices", sa.String(200)), ("launcher", sa.String(16)), ("job_id", sa.String(200)),
               ("host", sa.String(200)), ("wait_reason", sa.Text), ("queued_at", TS))


def upgrade() -> None:
    op.create_table(
        "device_claims",
        sa.Column("device", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(16), nullable=False),
        sa.Column("holder_id", sa.Integer, nullable=False, index=True),
        sa.Column("claimed_at", TS, nullable=False),
    )
    # A lock held by a run still working moves over as its claim of the one CPU slot (the only pool the old studio
    # knew), so an upgrade in the middle of a run does not start a second run beside it.
    op.execute("INSERT INTO device_claims (device, holder, holder_id, claimed_at) "
               "SELECT 'cpu', 'run', run_id, locked_at FROM device_locks")
    op.drop_table("device_locks")
    with op.batch_alter_table("runs") as batch:
        for name, kind in RUN_COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))
    op.execute("UPDATE runs SET queued_at = created_at")
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("host", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("host")
    with op.batch_alter_table("runs") as batch:
        for name, _ in reversed(RUN_COLUMNS):
            batch.drop_column(name)
    op.create_table(
        "device_locks",
        sa.Column("device_set", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("locked_at", TS, nullable=False),
    )
    op.drop_table("device_claims")
