"""Tasks say through which launcher their worker started and, for a Ray job, its id: with ``STUDIO_RAY_ADDRESS`` set,
automatic metrics and exports run on the Ray cluster, where a pid means nothing.

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TASK_COLUMNS = (("launcher", sa.String(16)), ("job_id", sa.String(200)))


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        for name, kind in TASK_COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        for name, _ in reversed(TASK_COLUMNS):
            batch.drop_column(name)
