"""The test harness itself: test studios bind a port the system picks."""

from __future__ import annotations

import urllib.request

from conftest import StudioProcess


def test_a_studio_on_port_0_binds_a_free_port_and_says_which(tmp_path):
    studio = StudioProcess(tmp_path / "studio.log", tmp_path / "home")  # STUDIO_PORT=0
    try:
        url = studio.wait_until_up()
        assert studio.port > 0 and url == f"http://127.0.0.1:{studio.port}"
        assert urllib.request.urlopen(f"{url}/health", timeout=30).status == 200
    finally:
        studio.stop()
