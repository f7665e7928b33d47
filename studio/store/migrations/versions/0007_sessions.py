"""``ended_sessions``: sign-ins ended by signing out, so a copied cookie of one is refused by every web process
and after a restart. A row is kept until the session would have expired anyway.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("ended_sessions", sa.Column("id", sa.String(64), primary_key=True),
                    sa.Column("until", sa.Float, nullable=False))
    op.create_index("ix_ended_sessions_until", "ended_sessions", ["until"])


def downgrade() -> None:
    op.drop_index("ix_ended_sessions_until", "ended_sessions")
    op.drop_table("ended_sessions")
