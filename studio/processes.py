"""Detached worker processes: the training workers and the background-task workers are started here, and reaped here.

A worker runs in a session of its own, so closing the browser, the studio or the CLI does not stop it. The process
that started it is still its parent, though, and a child that exits stays a zombie (``<defunct>``) until its parent
collects its exit status: ``reap_children`` does that for every child that ended, whatever its record says, so a
dispatcher round leaves none behind (the record of a worker that finished by itself is never looked at again).
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

from studio.settings import Settings
from studio.store.tables import as_utc

ROOT = Path(__file__).resolve().parents[1]  # the worker runs `-m studio....` from here
_children: dict[int, subprocess.Popen] = {}  # workers this process started and has not reaped yet
_lock = threading.Lock()


def start_detached(command: list[str], log_path: Path, settings: Settings, **extra_env: str) -> int:
    """Starts ``command`` in a new session with its output appended to ``log_path``; returns its pid. The worker
    gets every setting of this process (flags of `studio serve` included) through its ``STUDIO_*`` variables."""
    env = {**os.environ, **settings.as_env(), "PYTHONUNBUFFERED": "1", **extra_env}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   cwd=ROOT, start_new_session=True)
    with _lock:
        _children[process.pid] = process
    return process.pid


def reap_children() -> None:
    """Collects the exit status of every worker this process started that has ended (no zombie stays)."""
    with _lock:
        for pid, process in list(_children.items()):
            if process.poll() is not None:
                del _children[pid]


def process_alive(pid: int | None) -> bool:
    """Whether process ``pid`` on this machine is still running (a zombie is not)."""
    if not pid:
        return False
    reap_children()  # a child of ours that ended is gone after this, not a zombie answering kill(0)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie that is not our child (its parent has not reaped it) answers kill(0) but is dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def this_host() -> str:
    """This machine's name, recorded with the workers started here: a pid means something on its own host only."""
    return socket.gethostname()


def worker_gone(pid: int | None, heartbeat_at: datetime | None, timeout: timedelta, log: Path,
                host: str | None = None) -> str | None:
    """Why the worker with ``pid`` and this last heartbeat counts as gone — its process died, or it sent no heartbeat
    for ``timeout`` — with the end of its log; None while it lives, or while it is being started (no pid yet). A
    worker started on another ``host`` (dispatchers on several machines sharing a PostgreSQL store) is judged by
    its heartbeat alone."""
    heartbeat_at = as_utc(heartbeat_at)
    stale = heartbeat_at is not None and datetime.now(timezone.utc) - heartbeat_at > timeout
    if host not in (None, this_host()):
        alive = True  # its pid is another machine's: only its heartbeat tells
    elif pid is None and not stale:
        return None  # claimed a moment ago by a dispatcher that is starting its worker right now
    else:
        alive = process_alive(pid)
    if alive and not stale:
        return None
    reason = "the worker stopped sending heartbeats" if alive else "the worker process died"
    return f"{reason}. Last lines of its log:\n{log_tail(log)}"


def log_tail(path: Path, lines: int = 30, most_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a worker's log ("" when there is none yet); only its end is read, however long
    the log has grown."""
    if not path.exists():
        return ""
    with open(path, "rb") as log:
        log.seek(max(0, log.seek(0, os.SEEK_END) - most_bytes))
        return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])


def announcing_server(config, announce):
    """A uvicorn server that calls ``announce(port)`` once it listens, with the port it bound: with port 0 (a free
    port the system picks) only the bound socket knows it. The web studio and the deployments' processes use it."""
    import uvicorn

    class AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if not self.should_exit:
                announce(self.servers[0].sockets[0].getsockname()[1])

    return AnnouncingServer(config)
