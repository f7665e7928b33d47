"""The disk guard: refuse new work up front when STUDIO_HOME is nearly full, instead of failing halfway."""

from __future__ import annotations

import shutil

from studio.store.engine import Store


def free_mb(store: Store) -> float:
    return shutil.disk_usage(store.home).free / 2**20


def low_space(store: Store, action: str) -> str | None:
    """A message for people when less than ``min_free_disk_mb`` is free under the studio's home, else None."""
    needed = store.settings.min_free_disk_mb
    free = free_mb(store)
    if needed and free < needed:
        return (f"not enough free disk space to {action}: {free:,.0f} MB free under {store.home}, at least "
                f"{needed:,} MB wanted. Free some space (delete old runs, sample sets or datasets) or lower "
                f"STUDIO_MIN_FREE_DISK_MB.")
    return None
