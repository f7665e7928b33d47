"""How long from launching the studio to its first HTTP answer, against a bare Gradio app on the same machine
(target: 4 s or less on an idle 2-core machine).

    .venv/bin/python bench/startup.py                  # 5 launches of each, then where the studio's time goes
    .venv/bin/python bench/startup.py --runs 3 --no-breakdown
    .venv/bin/python bench/startup.py --before ../main   # also launch another checkout's studio, alternated

1. Launches, alternated so that both see the same load: ``python studio_app.py`` (the same ``serve()`` as
   ``studio serve`` and ``scripts/serve.sh``) with an empty ``STUDIO_HOME`` on a free port, timed from the launch to
   the first 200 of ``/health`` and of ``/`` (the studio's page, its title in it); against it the peer a person
   would otherwise pick, a bare ``gr.Blocks()`` hello world started with ``launch()``, and that hello world again
   with Gradio imported the way the studio imports it (``studio.ui.gradio_import``). Wall-clock seconds from the
   launch, and the launched process's CPU seconds (user + system, until it is stopped right after its answer): on
   a shared machine the CPU time is the steadier figure. Median and range over the runs.
2. Where the studio's time goes: the steps of ``serve()`` in a fresh process each (wall and CPU seconds, median
   over the runs), Gradio's own share of building the apps, the packages ``python -X importtime`` charges the
   start-up imports to, and which heavy libraries are (not) imported.

Gradio analytics are switched off for every launch (``GRADIO_ANALYTICS_ENABLED=False``): nothing here should wait
on the network.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 4.0
sys.path.insert(0, str(ROOT / "tests"))
from test_web import HEAVY  # noqa: E402 - what start-up must not import: the list tests/test_web.py checks
HELLO = """
import sys
if sys.argv[1] == "studio-import":
    import studio.ui  # noqa: F401 - Gradio imported as the studio imports it
import gradio as gr
with gr.Blocks() as demo:
    gr.Markdown("Hello")
demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[2]))
"""


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answered(url: str, expect: str = "") -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200 and expect in response.read().decode(errors="replace")
    except OSError:
        return False


def launch(kind: str, before: Path | None = None) -> dict:
    """Start one server (``studio``, ``before`` (the studio of the checkout ``before``), ``gradio`` or
    ``gradio-studio-import``) and time its first answers."""
    port = free_port()
    root = before if kind == "before" else ROOT
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "STUDIO_HOME": home, "STUDIO_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False",
               "PYTHONPATH": str(root)}
        studio = kind in ("studio", "before")
        command = [sys.executable, "studio_app.py"] if studio else \
            [sys.executable, "-c", HELLO, "studio-import" if kind == "gradio-studio-import" else "plain", str(port)]
        waits = {"/health": "", "/": "Gen Studio"} if studio else {"/": "gradio"}
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        found: dict = {}
        try:
            for path, expect in waits.items():
                while not answered(f"http://127.0.0.1:{port}{path}", expect):
                    if process.poll() is not None:
                        raise RuntimeError(f"{kind} exited during start-up: {process.stderr.read().decode()[-2000:]}")
                    time.sleep(0.02)
                found[path] = time.perf_counter() - started
        finally:
            process.terminate()
            process.communicate(timeout=30)
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        found["cpu"] = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
        return found


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):5.2f} ({min(values):.2f}–{max(values):.2f})"


def measure_launches(runs: int, before: Path | None) -> dict:
    kinds = ("studio", "gradio", "gradio-studio-import") + (("before",) if before else ())
    results: dict = {kind: [] for kind in kinds}
    for run in range(runs):
        for kind in kinds:
            results[kind].append(launch(kind, before))
        print(f"  run {run + 1}/{runs}: studio {results['studio'][-1]['/']:.2f} s, bare Gradio "
              f"{results['gradio'][-1]['/']:.2f} s (load avg {loadavg()})", flush=True)
    return results


def print_launches(results: dict, before: Path | None) -> None:
    rows = [("studio: /health", "studio", "/health"), ("studio: /", "studio", "/"),
            *([(f"the studio of {before}: /", "before", "/")] if before else []),
            ("bare gr.Blocks().launch(): /", "gradio", "/"),
            ("the same, Gradio imported as the studio does: /", "gradio-studio-import", "/")]
    print("\n| server: first 200 of | wall s, median (range) | CPU s, median (range) |\n| --- | ---: | ---: |")
    for label, kind, path in rows:
        print(f"| {label} | {summary([r[path] for r in results[kind]])} | "
              f"{summary([r['cpu'] for r in results[kind]])} |")
    studio = statistics.median(r["/"] for r in results["studio"])
    bare = statistics.median(r["/"] for r in results["gradio"])
    studio_cpu = statistics.median(r["cpu"] for r in results["studio"])
    bare_cpu = statistics.median(r["cpu"] for r in results["gradio"])
    verdict = "met" if studio <= TARGET_S else "NOT met"
    print(f"\nstudio / bare Gradio: {studio / bare:.2f}x wall, {studio_cpu / bare_cpu:.2f}x CPU; "
          f"studio's first page after {studio:.2f} s (target {TARGET_S:.0f} s: {verdict} at this load)")


# --- 2. where the time goes -------------------------------------------------------------------------------------

def phases(launched_at: float) -> dict:
    """serve()'s steps, one by one, in this (fresh) process: wall and CPU seconds each."""
    times: dict = {}
    clock = [time.perf_counter(), time.process_time()]
    times["python itself (interpreter, site-packages)"] = (time.time() - launched_at, None)

    def lap(name: str) -> None:
        now = [time.perf_counter(), time.process_time()]
        times[name] = (now[0] - clock[0], now[1] - clock[1])
        clock[:] = now

    import studio.ui  # noqa: F401 - as the studio imports Gradio
    import gradio as gr
    lap("import gradio")
    import uvicorn

    from studio.auth import Access
    from studio.settings import load_settings
    from studio.store import open_store
    from studio.ui import app as ui_app
    from studio.ui import server as ui_server
    lap("import the studio's web modules (tabs, services, store)")
    settings = load_settings()
    store = open_store(settings)
    lap("open the store (schema migrations)")
    access = Access.from_settings(settings, store)
    lap("sign-in settings")

    inside: dict = defaultdict(float)

    def timed(owner, name: str, label: str):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                inside[label + " wall"] += time.perf_counter() - wall
                inside[label + " cpu"] += time.process_time() - cpu
                inside[label + " calls"] += 1
        setattr(owner, name, staticmethod(wrapper) if isinstance(owner, type) else wrapper)

    from gradio.routes import App

    timed(ui_app, "build_app", "build the studio's Blocks (all tabs)")
    timed(ui_app, "build_rater_app", "build the rating page's Blocks")
    timed(gr, "mount_gradio_app", "mount both in the server (Gradio)")
    timed(App, "create_app", "Gradio building an app's FastAPI routes")
    clock[:] = [time.perf_counter(), time.process_time()]
    app = ui_server.build_server(store, access)
    lap("build the web server")
    ui_server.start_dispatcher(store)
    port = settings.port
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    import threading
    threading.Thread(target=server.run, daemon=True).start()
    while not answered(f"http://127.0.0.1:{port}/", "Gen Studio"):
        time.sleep(0.01)
    lap("start uvicorn, answer the first /")
    server.should_exit = True
    heavy = [name for name in HEAVY if name in sys.modules]
    return {"times": times, "inside": dict(inside), "heavy": heavy, "pandas": "pandas" in sys.modules}


def run_phases(runs: int) -> list[dict]:
    found = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "STUDIO_HOME": home, "STUDIO_PORT": str(free_port()),
                   "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
            done = subprocess.run([sys.executable, __file__, "--phases", repr(time.time())], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=300, check=True)
            found.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return found


def print_phases(found: list[dict]) -> None:
    print("\n| step of serve() | wall s | CPU s |\n| --- | ---: | ---: |")
    total_wall = total_cpu = 0.0
    for name in found[0]["times"]:
        wall = statistics.median(run["times"][name][0] for run in found)
        cpus = [run["times"][name][1] for run in found if run["times"][name][1] is not None]
        cpu = statistics.median(cpus) if cpus else None
        total_wall += wall
        total_cpu += cpu or 0.0
        print(f"| {name} | {wall:.2f} | {'' if cpu is None else f'{cpu:.2f}'} |")
    print(f"| **total** | **{total_wall:.2f}** | {total_cpu:.2f} (+ python itself) |")
    print("\nInside *build the web server* (included above):")
    labels = sorted({key.rsplit(' ', 1)[0] for key in found[0]["inside"]})
    for label in labels:
        wall = statistics.median(run["inside"][label + " wall"] for run in found)
        cpu = statistics.median(run["inside"][label + " cpu"] for run in found)
        calls = int(found[0]["inside"][label + " calls"])
        print(f"  - {label}: {wall:.2f} s wall, {cpu:.2f} s CPU" + (f" ({calls} calls)" if calls > 1 else ""))
    heavy = found[0]["heavy"]
    print(f"\nImported at start-up from {', '.join(HEAVY)}: {', '.join(heavy) if heavy else 'none'}; "
          f"pandas {'imported (by Gradio itself: gradio.utils imports gradio.caching, which imports pandas)' if found[0]['pandas'] else 'not imported'}.")


def import_shares(top: int = 12) -> None:
    """The start-up imports, charged to top-level packages by their own time under ``python -X importtime``."""
    code = "import studio.ui.server, studio.ui.app, studio.settings, studio.store, uvicorn"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    own: dict = defaultdict(int)
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if match:
            own[match.group(2).split(".")[0]] += int(match.group(1))
    total = sum(own.values())
    print(f"\n`python -X importtime` of the start-up imports ({total / 1e6:.2f} s under importtime, which inflates "
          "it): own time by top-level package")
    print("\n| package | s | share |\n| --- | ---: | ---: |")
    for name, micros in sorted(own.items(), key=lambda item: -item[1])[:top]:
        print(f"| {name} | {micros / 1e6:.2f} | {100 * micros / total:.0f} % |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-breakdown", action="store_true", help="time the launches only")
    parser.add_argument("--before", type=Path, help="another checkout (e.g. the main branch) whose studio to launch "
                        "too, alternated with this one's")
    parser.add_argument("--phases", help=argparse.SUPPRESS)  # internal: one breakdown run, launched at this time
    args = parser.parse_args()
    if args.phases:
        print(json.dumps(phases(float(args.phases))))
        return
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores, Python {sys.version.split()[0]}, load avg {loadavg()} (1, 5, 15 min) at the start",
          flush=True)
    before = args.before.resolve() if args.before else None
    print_launches(measure_launches(args.runs, before), before)
    if not args.no_breakdown:
        print_phases(run_phases(args.runs))
        import_shares()
    print(f"\nload avg {loadavg()} at the end")


if __name__ == "__main__":
    main()
