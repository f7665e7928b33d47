"""Shared fixtures: a fresh STUDIO_HOME and store per test."""

from __future__ import annotations

import contextlib
import os
import re

import pytest

from studio.settings import load_settings
from studio.store import open_store


@pytest.fixture
def home(tmp_path):
    return tmp_path / "studio_home"


@pytest.fixture(autouse=True)
def _restore_pil_pixel_limit():
    # inspect_image sets PIL's process-wide limit; keep one test's small limit out of the others.
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = before


@pytest.fixture
def stores(tmp_path):
    """Opens stores with setting overrides (``stores(max_upload_mb=1)``), all closed after the test."""
    from media_factory import StoreOpener

    opener = StoreOpener(tmp_path)
    yield opener
    opener.close()


@pytest.fixture
def scratch(tmp_path):
    return tmp_path / "scratch"


@pytest.fixture
def store(home):
    opened = open_store(load_settings(home=home))
    yield opened
    opened.close()


def service_missing(what: str, how: str):
    """A service some tests need (a browser, a database) is missing: locally they skip, saying how to get it; with
    ``CI`` set (as CI systems set it, and .ci/run) they fail, so a CI run cannot go green by skipping them."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}, and CI is set: CI must run these tests ({how})", pytrace=False)
    pytest.skip(f"{what}: {how}")


SERVICES = "run `bash scripts/test_services.sh` as root (scripts/test.sh does)"
CHROMIUM = os.environ.get("STUDIO_TEST_CHROMIUM") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def postgres_server() -> str:
    """STUDIO_TEST_POSTGRES_URL, the test PostgreSQL server, once it names a database that is clearly a test one."""
    from sqlalchemy.engine import make_url

    url = os.environ.get("STUDIO_TEST_POSTGRES_URL")
    if not url:
        service_missing("no PostgreSQL server (STUDIO_TEST_POSTGRES_URL is not set)",
                        f"{SERVICES}, or point STUDIO_TEST_POSTGRES_URL at a test database of your server")
    database = make_url(url).database or ""
    if "test" not in database.lower():
        pytest.fail(f"STUDIO_TEST_POSTGRES_URL names the database {database!r}: the PostgreSQL tests refuse a "
                    "database whose name does not say it is a test one (no 'test' in it)", pytrace=False)
    return url


@contextlib.contextmanager
def throwaway_postgres():
    """A database on the test PostgreSQL server, created here and dropped on leaving; its URL. The database
    STUDIO_TEST_POSTGRES_URL names is only connected to, never changed."""
    import secrets

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = make_url(postgres_server())
    name = f"studio_test_{secrets.token_hex(6)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")  # CREATE/DROP DATABASE refuse a transaction
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:  # FORCE: a connection a failed test left open must not keep it
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url():
    """A throwaway database on the test PostgreSQL server for this test (see ``throwaway_postgres``); its URL."""
    with throwaway_postgres() as url:
        yield url


@pytest.fixture
def web_home(tmp_path):
    """The STUDIO_HOME of ``running_studio``; request it first to put data there before the studio starts."""
    return tmp_path / "web_home"


class StudioProcess:
    """`python studio_app.py` in a subprocess with its own STUDIO_HOME (and any extra environment, e.g.
    ``STUDIO_USERS``); ``url`` once it answers. It binds port 0 and announces the port the system gave it: a free
    port chosen here and released for the studio could be taken by another process in between. ``own_session``: in
    a process group of its own, as a studio started from a terminal is, so that a test can kill it with everything
    in its group."""

    ANNOUNCED = re.compile(r"^Gen Studio at http://\S+:(\d+) ", re.M)

    def __init__(self, log_path, home, own_session: bool = False, **env):
        import subprocess
        import sys
        from pathlib import Path

        self.port: int | None = None
        self.url: str | None = None
        self.log_path = log_path
        self._log = open(log_path, "w")
        full_env = {**os.environ, "STUDIO_HOME": str(home), "STUDIO_PORT": "0", **env}
        self.process = subprocess.Popen([sys.executable, "studio_app.py"], cwd=Path(__file__).parent.parent,
                                        env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=own_session)

    def wait_until_up(self, seconds: float = 60) -> str:
        import time

        deadline = time.time() + seconds
        while time.time() < deadline:
            if self.url is None and (announced := self.ANNOUNCED.search(self.log_path.read_text())):
                self.port = int(announced.group(1))
                self.url = f"http://127.0.0.1:{self.port}"
            if self.url and self._answers():
                return self.url
            if self.process.poll() is not None:
                raise RuntimeError(self.log_path.read_text())
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the studio did not answer within {seconds:.0f} s:\n" + self.log_path.read_text())

    def _answers(self) -> bool:
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(f"{self.url}/health", timeout=2)
        except urllib.error.HTTPError:
            return True  # it answers, even if not with 200
        except OSError:
            return False
        return True

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        self._log.close()


class ServedHere:
    """An ASGI app (``studio.ui.server.build_server``'s) served from this process by uvicorn in a thread, for a test
    that reaches into the running studio (a clock it moves, a handler it slows). Its port is held from binding to
    serving, so no other process can take it in between. ``url``; ``stop()``."""

    def __init__(self, app, **uvicorn_options):
        import socket
        import threading
        import time

        import uvicorn

        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{listening.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **uvicorn_options))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [listening]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the studio did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def running_studio(tmp_path, web_home):
    """`python studio_app.py` in a subprocess with its own STUDIO_HOME; yields its URL."""
    studio = StudioProcess(tmp_path / "studio.log", web_home)
    yield studio.wait_until_up()
    studio.stop()


@pytest.fixture
def browser_page():
    """A Playwright page in Debian's chromium (playwright cannot download browsers here), or the chromium that
    STUDIO_TEST_CHROMIUM names."""
    if not os.access(CHROMIUM, os.X_OK):
        service_missing(f"no chromium at {CHROMIUM}", f"{SERVICES}, or set STUDIO_TEST_CHROMIUM to a chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        yield page
        browser.close()


@pytest.fixture
def one_torch_thread():
    """One torch thread: for models this small, two OpenMP threads on a busy two-core machine spend most of
    their time waiting for each other (measured 5-9x slower than one)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
