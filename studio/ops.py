"""How a running studio is doing, for the people and machines that keep it up: ``/health`` (is it serving, can
it reach its database), ``/metrics`` (Prometheus text) and ``/status`` (the same figures as a page).

Nothing here imports torch: GPU memory comes from ``nvidia-smi``, which also sees the training workers' memory
(a separate process's CUDA context is invisible to torch in the web process). The size of STUDIO_HOME is
walked at most once a minute, since a large home holds many files.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from sqlalchemy import func, select, text

from studio import placement
from studio.status import RunStatus
from studio.store import Store
from studio.store.disk import low_space
from studio.store.tables import Run

DISK_WALK_SECONDS = 60.0
_cache: dict[str, tuple[float, object]] = {}
_cache_lock = threading.Lock()


def _cached(key: str, seconds: float, compute):
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
        if hit and now - hit[0] < seconds:
            return hit[1]
    value = compute()
    with _cache_lock:
        _cache[key] = (now, value)
    return value


def folder_bytes(root: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass  # removed while we walked
    return total


def gpu_memory() -> list[dict]:
    """One row per GPU: ``{index, name, used_mb, total_mb}``; empty without an NVIDIA driver."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.used,memory.total",
                               "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return []
    rows = []
    for line in done.stdout.strip().splitlines() if done.returncode == 0 else []:
        try:
            index, name, used, total = [part.strip() for part in line.split(",")]
            rows.append({"index": int(index), "name": name, "used_mb": float(used), "total_mb": float(total)})
        except ValueError:
            continue  # "[N/A]" (MIG, vGPU) or an odd line: leave that GPU out rather than fail the page
    return rows


def run_counts(store: Store) -> dict[str, int]:
    with store.session() as session:
        found = dict(session.execute(select(Run.status, func.count()).group_by(Run.status)).all())
    return {status.value: found.get(status, 0) for status in RunStatus}


def collect(store: Store) -> dict:
    """Every figure of ``/metrics`` and ``/status``."""
    usage = shutil.disk_usage(store.home)
    return {"runs": run_counts(store),
            "disk": {"home": str(store.home),
                     "used_by_studio_bytes": _cached(f"du:{store.home}", DISK_WALK_SECONDS,
                                                     lambda: folder_bytes(store.home)),
                     "free_bytes": usage.free, "total_bytes": usage.total,
                     "min_free_bytes": store.settings.min_free_disk_mb * 2**20,
                     "guard": low_space(store, "start new work")},
            "gpus": _cached("gpus", 5.0, gpu_memory),
            "devices": placement.usage(store)}


def health(store: Store) -> dict:
    """``ok``; ``degraded`` when the disk guard would refuse new work; ``down`` when the database does not
    answer (the endpoint then says 503, so a load balancer or Docker's HEALTHCHECK sees it)."""
    try:
        with store.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        database = "ok"
    except Exception as error:  # noqa: BLE001 - any failure to reach the database is the answer itself
        database = f"unreachable: {type(error).__name__}"
    low = low_space(store, "start new work")
    status = "down" if database != "ok" else "degraded" if low else "ok"
    return {"status": status, "database": database, "disk": low or "ok"}


def prometheus_text(figures: dict) -> str:
    lines = ["# HELP studio_runs Training runs by status.", "# TYPE studio_runs gauge"]
    lines += [f'studio_runs{{status="{status}"}} {count}' for status, count in figures["runs"].items()]
    disk = figures["disk"]
    for name, help_text, key in (("studio_home_used_bytes", "Bytes under STUDIO_HOME.", "used_by_studio_bytes"),
                                 ("studio_disk_free_bytes", "Free bytes on STUDIO_HOME's disk.", "free_bytes"),
                                 ("studio_disk_total_bytes", "Size of STUDIO_HOME's disk.", "total_bytes"),
                                 ("studio_disk_guard_bytes", "Free bytes below which new work is refused.",
                                  "min_free_bytes")):
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {disk[key]}"]
    lines += ["# HELP studio_gpu_memory_used_bytes GPU memory in use (all processes).",
              "# TYPE studio_gpu_memory_used_bytes gauge"]
    lines += [f'studio_gpu_memory_used_bytes{{gpu="{g["index"]}"}} {int(g["used_mb"] * 2**20)}'
              for g in figures["gpus"]]
    lines += ["# HELP studio_gpu_memory_total_bytes GPU memory.", "# TYPE studio_gpu_memory_total_bytes gauge"]
    lines += [f'studio_gpu_memory_total_bytes{{gpu="{g["index"]}"}} {int(g["total_mb"] * 2**20)}'
              for g in figures["gpus"]]
    devices = figures["devices"]
    lines += ["# HELP studio_devices Devices of the placement pool (STUDIO_GPUS) by state: held by a run, a "
              "deployment or a generation, or free.", "# TYPE studio_devices gauge",
              f'studio_devices{{state="busy"}} {len(devices["busy"])}',
              f'studio_devices{{state="free"}} {len(devices["free"])}',
              "# HELP studio_device_busy Whether each device of the pool is held (1) or free (0).",
              "# TYPE studio_device_busy gauge"]
    lines += [f'studio_device_busy{{device="{d}"}} {int(d in devices["busy"])}' for d in devices["devices"]]
    return "\n".join(lines) + "\n"


def _holders(busy: dict[str, str]) -> str:
    return f" ({html.escape(', '.join(f'{device}: {holder}' for device, holder in busy.items()))})" if busy else ""


def _gb(value: float) -> str:
    return f"{value / 2**30:,.1f} GB"


def status_html(figures: dict) -> str:
    """A plain page people can read: runs waiting and running, disk, GPU memory."""
    runs = figures["runs"]
    disk = figures["disk"]
    gpus = "".join(f"<tr><td>GPU {g['index']} · {html.escape(g['name'])}</td><td>{g['used_mb'] / 1024:,.1f} of "
                   f"{g['total_mb'] / 1024:,.1f} GB in use</td></tr>" for g in figures["gpus"]) or \
        "<tr><td>GPU</td><td>none found (training runs on the CPU)</td></tr>"
    rows = (f"<tr><td>Runs queued</td><td id='runs-queued'>{runs['queued']}</td></tr>"
            f"<tr><td>Runs starting / running</td><td id='runs-running'>{runs['starting']} / {runs['running']}"
            "</td></tr>"
            f"<tr><td>Devices busy</td><td id='devices-busy'>{len(figures['devices']['busy'])} of "
            f"{len(figures['devices']['devices'])}{_holders(figures['devices']['busy'])}</td></tr>"
            f"<tr><td>Runs completed / failed / stopped</td><td>{runs['completed']} / {runs['failed']} / "
            f"{runs['stopped']}</td></tr>"
            f"<tr><td>Used by the studio ({html.escape(disk['home'])})</td><td>{_gb(disk['used_by_studio_bytes'])}"
            f"</td></tr><tr><td>Free on its disk</td><td>{_gb(disk['free_bytes'])} of {_gb(disk['total_bytes'])}"
            f"{' — ' + html.escape(disk['guard']) if disk.get('guard') else ''}</td></tr>{gpus}")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Gen Studio · status</title>"
            "<meta http-equiv='refresh' content='10'><style>body{font-family:system-ui,sans-serif;margin:2rem}"
            "td{padding:.3rem 1rem;border-bottom:1px solid #ddd}</style></head><body><h2>Gen Studio · status</h2>"
            f"<table>{rows}</table><p>Machine-readable: <a href='/metrics'>/metrics</a> (Prometheus), "
            "<a href='/health'>/health</a>.</p></body></html>")
