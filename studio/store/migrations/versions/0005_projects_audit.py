"""Projects and the audit trail: ``actions`` (who did what, when) and ``sample_sets.project_id``.

Every existing sample set is given a project: the project of the first run among its variants, else the
default project (created if the database has none).

Revision ID: 0005
Revises: 0004
"""
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
DEFAULT_PROJECT = "default"  # the name studio.data.service uses; a migration must not import the app


def _add_sample_set_project() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot ALTER in a constraint, but it accepts a REFERENCES clause on a new nullable column,
        # which keeps the table (and the generated_samples pointing at it) in place instead of a copy-and-move.
        op.execute("ALTER TABLE sample_sets ADD COLUMN project_id INTEGER REFERENCES projects (id)")
    else:
        op.add_column("sample_sets", sa.Column("project_id", sa.Integer, nullable=True))
        op.create_foreign_key(None, "sample_sets", "projects", ["project_id"], ["id"])
    op.create_index("ix_sample_sets_project_id", "sample_sets", ["project_id"])


def _default_project_id(bind) -> int:
    projects = sa.table("projects", sa.column("id", sa.Integer), sa.column("name", sa.String),
                        sa.column("created_at", TS))
    found = bind.execute(sa.select(projects.c.id).where(projects.c.name == DEFAULT_PROJECT)).scalar()
    if found is None:
        bind.execute(projects.insert().values(name=DEFAULT_PROJECT, created_at=datetime.now(timezone.utc)))
        found = bind.execute(sa.select(projects.c.id).where(projects.c.name == DEFAULT_PROJECT)).scalar()
    return found


def _backfill_sample_set_projects() -> None:
    bind = op.get_bind()
    sets = sa.table("sample_sets", sa.column("id", sa.Integer), sa.column("variants", sa.JSON),
                    sa.column("project_id", sa.Integer))
    runs = sa.table("runs", sa.column("id", sa.Integer), sa.column("project_id", sa.Integer))
    run_projects = dict(bind.execute(sa.select(runs.c.id, runs.c.project_id)).all())
    rows = bind.execute(sa.select(sets.c.id, sets.c.variants)).all()
    default = _default_project_id(bind) if rows else None
    for set_id, variants in rows:
        run_ids = [v.get("run_id") for v in (variants or []) if isinstance(v, dict) and v.get("run_id")]
        project_id = next((run_projects[r] for r in run_ids if r in run_projects), default)
        bind.execute(sets.update().where(sets.c.id == set_id).values(project_id=project_id))


def upgrade() -> None:
    op.create_table(
        "actions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", TS, nullable=False, index=True),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("project", sa.String(200), nullable=True, index=True),
        sa.Column("details", sa.JSON, nullable=False),
    )
    _add_sample_set_project()
    _backfill_sample_set_projects()


def downgrade() -> None:
    op.drop_index("ix_sample_sets_project_id", "sample_sets")
    with op.batch_alter_table("sample_sets") as batch:
        batch.drop_column("project_id")
    op.drop_table("actions")
