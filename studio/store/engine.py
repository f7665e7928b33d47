"""Opening the store: the database (migrated to the current schema) and the STUDIO_HOME folders."""

from __future__ import annotations

import os
import warnings
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


def _private_sqlite_files(url: str) -> None:
    """The SQLite database and its -wal/-shm files readable by their owner only: they hold every record (users'
    votes, runs, who did what). A new database is created 0600, and SQLite gives its -wal and -shm files the
    database file's mode; files an older studio left readable by others are narrowed on open."""
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if path.parent.is_dir():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # SQLite takes an empty file
        except FileExistsError:
            pass
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = file.stat().st_mode & 0o777
            if mode & 0o077:
                file.chmod(mode & 0o700)
        except FileNotFoundError:
            continue
        except PermissionError:
            warnings.warn(f"{file} is readable by other users ({mode:o}) and the studio cannot change that: "
                          f"run chmod 600 on it", stacklevel=2)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        _private_sqlite_files(url)
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
