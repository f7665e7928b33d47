"""Persistence: SQLAlchemy tables, the engine, and queries. Nothing here imports services or UI."""

from studio.store.audit import list_actions, record_action
from studio.store.engine import Store, open_store

__all__ = ["Store", "list_actions", "open_store", "record_action"]
