"""Opening the store: the database (migrated to the current schema) and the STUDIO_HOME folders."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from studio.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the web process read while a worker writes; the busy timeout makes concurrent
    # writers wait for each other instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def upgrade_schema(engine: Engine, revision: str = "head") -> None:
    """Bring the database to the newest schema (or ``revision``), keeping every row (Alembic migrations)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


class Store:
    """The database and the folder tree under STUDIO_HOME, opened together."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.home = settings.home
        for folder in ("uploads", "datasets", "tmp", "exports"):
            (self.home / folder).mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(settings.db_url)
        upgrade_schema(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions() as session, session.begin():
            yield session

    def path(self, relative: str) -> Path:
        return self.home / relative

    def close(self) -> None:
        self.engine.dispose()


def open_store(settings: Settings) -> Store:
    return Store(settings)
