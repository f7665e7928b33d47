"""How long from launching the studio to its first HTTP answer (target: under 5 s on 2 cores).

    .venv/bin/python bench/startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def time_to_first_answer() -> float:
    port = free_port()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "STUDIO_HOME": home, "STUDIO_PORT": str(port)}
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "studio_app.py"], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                    return time.perf_counter() - started
                except OSError:
                    if process.poll() is not None:
                        raise RuntimeError("the studio exited during start-up")
                    time.sleep(0.05)
        finally:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    times = [time_to_first_answer() for _ in range(runs)]
    print(f"first HTTP answer after: {', '.join(f'{t:.2f} s' for t in times)} (best {min(times):.2f} s, "
          f"worst {max(times):.2f} s; target < 5 s)")
