"""Shared fixtures: a fresh STUDIO_HOME and store per test."""

from __future__ import annotations

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


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def web_home(tmp_path):
    """The STUDIO_HOME of ``running_studio``; request it first to put data there before the studio starts."""
    return tmp_path / "web_home"


class StudioProcess:
    """`python studio_app.py` in a subprocess on a free port with its own STUDIO_HOME (and any extra
    environment, e.g. ``STUDIO_USERS``); ``url`` once it answers. ``own_session``: in a process group of its own, as
    a studio started from a terminal is, so that a test can kill it with everything in its group."""

    def __init__(self, log_path, home, own_session: bool = False, **env):
        import os
        import subprocess
        import sys
        from pathlib import Path

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "w")
        full_env = {**os.environ, "STUDIO_HOME": str(home), "STUDIO_PORT": str(self.port), **env}
        self.process = subprocess.Popen([sys.executable, "studio_app.py"], cwd=Path(__file__).parent.parent,
                                        env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=own_session)

    def wait_until_up(self, seconds: float = 60) -> str:
        import time
        import urllib.error
        import urllib.request

        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2)
                return self.url
            except urllib.error.HTTPError:
                return self.url  # it answers, even if not with 200
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(self.log_path.read_text())
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the studio did not answer within {seconds:.0f} s:\n" + self.log_path.read_text())

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
    """`python studio_app.py` in a subprocess on a free port with its own STUDIO_HOME; yields its URL."""
    studio = StudioProcess(tmp_path / "studio.log", web_home)
    yield studio.wait_until_up()
    studio.stop()


@pytest.fixture
def browser_page():
    """A Playwright page in Debian's chromium (playwright cannot download browsers here)."""
    import os

    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (scripts/test.sh installs it with apt-get)")
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
