"""``id_watermarks``: the highest id ever given to a run, sample set or dataset, so SQLite never gives a deleted
row's id to a new one (folders, caches and the activity records are keyed by these ids; PostgreSQL's sequences
never reuse them anyway). Seeded with the current highest ids.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = ("runs", "sample_sets", "datasets")  # the names studio.store.tables watermarks


def upgrade() -> None:
    marks = op.create_table("id_watermarks", sa.Column("name", sa.String(64), primary_key=True),
                            sa.Column("last_id", sa.Integer, nullable=False))
    bind = op.get_bind()
    for name in TABLES:
        table = sa.table(name, sa.column("id", sa.Integer))
        highest = bind.execute(sa.select(sa.func.max(table.c.id))).scalar() or 0
        bind.execute(marks.insert().values(name=name, last_id=highest))


def downgrade() -> None:
    op.drop_table("id_watermarks")
