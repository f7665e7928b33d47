"""Alembic environment: the studio passes an open connection in ``config.attributes``."""

from alembic import context

from studio.store.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=True)  # batch mode: SQLite cannot ALTER most columns in place
with context.begin_transaction():
    context.run_migrations()
