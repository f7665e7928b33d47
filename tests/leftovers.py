"""What background work can leave behind: zombie children of the test process (a worker nobody reaped), and rows
and files under STUDIO_HOME (an import that stopped half-way)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import func, select

from studio.store.tables import Dataset, DatasetVersion, Upload


def stored(store) -> dict:
    """What an import writes: rows, and the files under STUDIO_HOME (the database itself and task logs aside)."""
    with store.session() as session:
        counts = {table.__tablename__: session.scalar(select(func.count()).select_from(table))
                  for table in (Upload, Dataset, DatasetVersion)}
    files = sorted(str(p.relative_to(store.home)) for p in store.home.rglob("*")
                   if p.is_file() and not p.name.startswith("studio.db") and p.parent.name != "tasks")
    return {**counts, "files": files}


def zombie_children() -> list[int]:
    """The children of this process that have exited but were never reaped (``<defunct>``)."""
    zombies = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if state == "Z" and int(parent) == os.getpid():
            zombies.append(int(stat.parent.name))
    return zombies


def wait_until_exited(pid: int, timeout: float = 60) -> None:
    """Until ``pid`` is no longer running: gone, or a zombie waiting for its parent."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except OSError:
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} still runs after {timeout}s")
