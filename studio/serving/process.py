"""A deployment's serving process: ``python -m studio.serving.process DEPLOYMENT_ID``, started detached by
``studio.serving.service``.

It beats (``heartbeat_at``, every few seconds) from the moment it starts, so loading large models never looks like
a dead process; builds the application (``create_app`` loads and quantises the models); listens with uvicorn on
the row's host and port (none: a free one); and once ``/health`` answers writes ``url``, ``pid``, ``running`` and
``started_at``. SIGTERM ends it cleanly (uvicorn finishes the open requests); its status stays what the stopper
wrote. If it cannot build the application or listen, it writes ``failed`` and the reason. It also ends by itself
when its row is no longer active (stopped from another machine, or given up on), and purges its own old requests
(``retention``).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import traceback
import urllib.request
from datetime import datetime, timezone

from sqlalchemy import update

from studio.settings import load_settings
from studio.status import DEPLOY_ACTIVE, DeployStatus
from studio.store import Store, open_store
from studio.store.tables import Deployment

BEAT_SECONDS = 3.0
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # bound to every interface: asked on loopback


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def public_url(host: str, port: int) -> str:
    """Where clients reach it: bound to every interface, this machine's name; else the address it listens on."""
    return f"http://{_host_in_url(socket.gethostname() if host in WILDCARDS else host)}:{port}"


def local_url(host: str, port: int) -> str:
    """Where this process asks itself whether it answers."""
    return f"http://{_host_in_url(WILDCARDS.get(host, host))}:{port}"


class Beat:
    """The heartbeat thread; it also stops the server once the row is no longer active, and purges old requests."""

    def __init__(self, store: Store, deployment_id: int):
        self.store, self.deployment_id = store, deployment_id
        self.server = None  # the uvicorn server, once there is one
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="beat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        from studio.serving.retention import purge_when_due

        while not self._stop.wait(BEAT_SECONDS):
            try:
                if not self.beat() and self.server is not None:
                    self.server.should_exit = True  # stopped (or failed) meanwhile: serve no more
                purge_when_due(self.store, self.deployment_id)
            except Exception:  # noqa: BLE001 - a database hiccup must not end the serving; the next beat retries
                logging.getLogger("studio").exception("heartbeat failed")

    def beat(self) -> bool:
        """Writes the heartbeat; False once the row is no longer starting or running."""
        with self.store.session() as session:
            return session.execute(update(Deployment).where(Deployment.id == self.deployment_id,
                                                            Deployment.status.in_(DEPLOY_ACTIVE))
                                   .values(heartbeat_at=_now(), pid=os.getpid())).rowcount == 1


def _fail(store: Store, deployment_id: int, error: str) -> None:
    print(f"deployment {deployment_id} failed: {error}", file=sys.stderr, flush=True)
    with store.session() as session:
        session.execute(update(Deployment).where(Deployment.id == deployment_id, Deployment.status.in_(DEPLOY_ACTIVE))
                        .values(status=DeployStatus.FAILED, error=error, stopped_at=_now()))


def _answers(url: str, seconds: float = 60) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def _announce_when_answering(store: Store, deployment_id: int, host: str, beat: Beat):
    """``announce(port)`` for the server: once ``/health`` answers, the row says ``running`` with the url (or the
    server stops, when the row was stopped meanwhile)."""

    def confirm(port: int) -> None:
        if not _answers(local_url(host, port)):
            _fail(store, deployment_id, f"it listens on port {port} but /health did not answer within a minute")
            beat.server.should_exit = True
            return
        with store.session() as session:
            running = session.execute(
                update(Deployment).where(Deployment.id == deployment_id, Deployment.status == DeployStatus.STARTING)
                .values(status=DeployStatus.RUNNING, url=public_url(host, port), pid=os.getpid(),
                        started_at=_now(), heartbeat_at=_now(), error=None)).rowcount == 1
        if running:
            print(f"deployment {deployment_id} serving at {public_url(host, port)}", flush=True)
        else:
            beat.server.should_exit = True

    return lambda port: threading.Thread(target=confirm, args=(port,), name="announce", daemon=True).start()


def serve_deployment(store: Store, deployment_id: int) -> int:
    """Builds the deployment's application and serves it until stopped; the exit code (1: it failed)."""
    with store.session() as session:
        row = session.get(Deployment, deployment_id)
        if row is None:
            print(f"there is no deployment {deployment_id}", file=sys.stderr)
            return 1
        host, port = row.host, row.port or 0
    beat = Beat(store, deployment_id)
    beat.start()
    try:
        return _build_and_serve(store, deployment_id, host, port, beat)
    finally:
        beat.stop()


def _build_and_serve(store: Store, deployment_id: int, host: str, port: int, beat: Beat) -> int:
    import uvicorn

    from studio.processes import announcing_server
    from studio.models.common import quiet_import_noise
    from studio.serving.app import create_app

    quiet_import_noise()  # the deployment's log is read by people: no warnings about GPU kernels it does not use
    try:
        app = create_app(store, deployment_id)
    except Exception as error:  # noqa: BLE001 - whatever stops the start is written down for the person
        traceback.print_exc()
        _fail(store, deployment_id, f"{type(error).__name__}: {error}")
        return 1
    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
    beat.server = announcing_server(config, _announce_when_answering(store, deployment_id, host, beat))
    try:
        beat.server.run()
    except SystemExit:  # uvicorn exits when it cannot listen (the port is taken); its log says why
        _fail(store, deployment_id, f"could not listen on {host}:{port} (is the port taken? pick another, or none "
                                    "for a free one)")
        return 1
    if not beat.server.started:
        _fail(store, deployment_id, f"could not listen on {host}:{port}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Gen Studio deployment server (started by `studio deploy start` "
                                                 "or the Deploy tab)")
    parser.add_argument("deployment_id", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve_deployment(open_store(load_settings()), args.deployment_id)


if __name__ == "__main__":
    sys.exit(main())
