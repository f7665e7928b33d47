"""``deployments``, ``api_keys`` and ``served_requests``: trained checkpoints served behind an OpenAI-compatible API,
the keys that open it, and what it answered (with users' feedback).

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("project", sa.String(200), nullable=True, index=True),
        sa.Column("models", sa.JSON, nullable=False),
        sa.Column("quantize", sa.String(16), nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("port", sa.Integer, nullable=True),
        sa.Column("url", sa.String(300), nullable=True),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("heartbeat_at", TS, nullable=True),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("stopped_at", TS, nullable=True),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("rate_per_minute", sa.Integer, nullable=True),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("last_used_at", TS, nullable=True),
    )
    op.create_table(
        "served_requests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("response_id", sa.String(64), nullable=False, unique=True),
        sa.Column("deployment_id", sa.Integer, sa.ForeignKey("deployments.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("route", sa.String(64), nullable=False),
        sa.Column("key_name", sa.String(200), nullable=True),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("outputs", sa.JSON, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("cache_hit", sa.Boolean, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("blocklist_hits", sa.Integer, nullable=False),
        sa.Column("rating", sa.String(8), nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("rated_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("served_requests")
    op.drop_table("api_keys")
    op.drop_table("deployments")
