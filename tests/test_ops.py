"""Operations: /health, /metrics (Prometheus) and /status report what the studio is doing — runs waiting and
running, the disk under STUDIO_HOME, GPU memory — and a database that does not answer makes /health say so."""

from __future__ import annotations

import json
import os
import socket
import threading
import urllib.request

import httpx
import pytest

from conftest import StudioProcess
from studio import ops
from studio.data.service import import_dataset
from studio.examples.text import make_corpus
from studio.training import jobs
from studio.training.config import TrainConfig


def queued_run(store, tmp_path) -> int:
    corpus = tmp_path / "stories.txt"
    corpus.write_text(make_corpus(size_kb=4, seed=1))
    dataset = import_dataset(store, [corpus], name="stories")["dataset_id"]
    return jobs.create_run(store, str(dataset), "starter-text", "scratch", TrainConfig(max_steps=2))


def test_metrics_count_runs_by_status_and_the_disk_under_the_home(store, tmp_path):
    before = ops.collect(store)
    assert before["runs"]["queued"] == 0
    queued_run(store, tmp_path)
    ops._cache.clear()  # the home's size is walked at most once a minute
    figures = ops.collect(store)
    assert figures["runs"]["queued"] == 1 and figures["runs"]["running"] == 0
    assert figures["disk"]["used_by_studio_bytes"] > before["disk"]["used_by_studio_bytes"]  # the dataset's files
    text = ops.prometheus_text(figures)
    assert 'studio_runs{status="queued"} 1' in text
    assert f"studio_home_used_bytes {figures['disk']['used_by_studio_bytes']}" in text
    page = ops.status_html(figures)
    assert "<td id='runs-queued'>1</td>" in page


def test_metrics_and_the_status_page_say_which_devices_of_the_pool_are_busy(stores):
    from studio import placement

    store = stores(gpus="0,1")
    with store.session() as session:
        placement.claim(session, "run", 7, ["1"])
    figures = ops.collect(store)
    text = ops.prometheus_text(figures)
    assert 'studio_devices{state="busy"} 1' in text and 'studio_devices{state="free"} 1' in text
    assert 'studio_device_busy{device="0"} 0' in text and 'studio_device_busy{device="1"} 1' in text
    assert "<td id='devices-busy'>1 of 2 (1: run 7)</td>" in ops.status_html(figures)


def test_gpu_memory_is_read_from_nvidia_smi(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '0, NVIDIA H200, 1024, 143771'\necho '1, NVIDIA H200, 0, 143771'\n"
                    "echo '2, NVIDIA A100 MIG, [N/A], [N/A]'\n")  # a MIG device reports no numbers: left out
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    gpus = ops.gpu_memory()
    assert gpus == [{"index": 0, "name": "NVIDIA H200", "used_mb": 1024.0, "total_mb": 143771.0},
                    {"index": 1, "name": "NVIDIA H200", "used_mb": 0.0, "total_mb": 143771.0}]
    text = ops.prometheus_text({"runs": {}, "disk": {"used_by_studio_bytes": 0, "free_bytes": 0, "total_bytes": 0,
                                                     "min_free_bytes": 0}, "gpus": gpus,
                                 "devices": {"devices": [], "busy": {}, "free": []}})
    assert f'studio_gpu_memory_used_bytes{{gpu="0"}} {1024 * 2**20}' in text


def test_health_says_degraded_when_the_disk_guard_would_refuse_and_down_without_a_database(stores):
    from sqlalchemy import create_engine

    assert ops.health(stores())["status"] == "ok"
    tight = stores(min_free_disk_mb=10**9)
    found = ops.health(tight)
    assert found["status"] == "degraded" and "not enough free disk space" in found["disk"]
    broken = stores()
    broken.engine = create_engine(f"sqlite:///{broken.home / 'missing-folder' / 'studio.db'}")
    found = ops.health(broken)
    assert found["status"] == "down" and found["database"].startswith("unreachable")


@pytest.mark.slow
def test_the_running_studio_serves_health_metrics_and_status(running_studio):
    health = json.loads(urllib.request.urlopen(f"{running_studio}/health", timeout=10).read())
    assert health == {"status": "ok", "database": "ok", "disk": "ok"} or health["status"] == "degraded"
    metrics = urllib.request.urlopen(f"{running_studio}/metrics", timeout=10).read().decode()
    assert 'studio_runs{status="running"} 0' in metrics and "studio_disk_free_bytes" in metrics
    status = urllib.request.urlopen(f"{running_studio}/status", timeout=10).read().decode()
    assert "Runs queued" in status
    # with sign-in off there is nothing to sign in to: the form sends people to the studio
    assert urllib.request.urlopen(f"{running_studio}/login", timeout=10).geturl() == f"{running_studio}/"


class TcpRelay:
    """A local port that forwards to ``target`` (host, port) until ``cut()``: a database server's only way in, so
    that a test can make it stop answering — open connections reset, new ones refused — and ``restore()`` it."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self._sockets: list[socket.socket] = []
        self._listen(0)

    def _listen(self, port: int) -> None:
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass

    def cut(self) -> None:
        for each in [self._listener] + self._sockets:
            try:
                each.shutdown(socket.SHUT_RDWR)  # (close alone does not wake a thread blocked in accept or recv)
            except OSError:
                pass
            each.close()
        self._sockets = []

    def restore(self) -> None:
        self._listen(self.port)


@pytest.mark.slow
def test_health_answers_503_over_http_while_the_database_does_not_answer(tmp_path, web_home, postgres_url):
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    relay = TcpRelay((url.host or "127.0.0.1", url.port or 5432))
    through_relay = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    studio = StudioProcess(tmp_path / "studio.log", web_home, STUDIO_DATABASE_URL=through_relay)
    try:
        base = studio.wait_until_up()
        assert httpx.get(f"{base}/health", timeout=30).json()["database"] == "ok"
        relay.cut()  # the database server is gone: its connections reset, new ones refused
        down = httpx.get(f"{base}/health", timeout=30)
        assert down.status_code == 503, down.text
        assert down.json()["status"] == "down" and down.json()["database"].startswith("unreachable"), down.text
        relay.restore()  # and back: the studio answers ok again without a restart
        assert httpx.get(f"{base}/health", timeout=30).status_code == 200
    finally:
        studio.stop()
        relay.cut()
