"""Persistence: SQLAlchemy tables, the engine, and queries. Nothing here imports services or UI."""

from studio.store.engine import Store, open_store

__all__ = ["Store", "open_store"]
