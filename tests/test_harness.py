"""The test harness itself: a CI run cannot go green by skipping the browser and PostgreSQL tests, the PostgreSQL
tests work in throwaway databases, and test studios bind a port the system picks."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from conftest import StudioProcess, postgres_server, throwaway_postgres

TESTS = Path(__file__).resolve().parent

NEEDS_SERVICES = '''
def test_needs_a_browser(browser_page):
    pass


def test_needs_postgresql(postgres_url):
    pass
'''


def run_without_services(tmp_path, **env) -> subprocess.CompletedProcess:
    """pytest, in a subprocess with this suite's fixtures, on two tests that need a browser and a PostgreSQL server
    while neither is there."""
    (tmp_path / "test_needs_services.py").write_text(NEEDS_SERVICES)
    outside = {k: v for k, v in os.environ.items() if k not in ("CI", "STUDIO_TEST_POSTGRES_URL")}
    full_env = {**outside, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]),
                "STUDIO_TEST_CHROMIUM": str(tmp_path / "no-chromium"), "COLUMNS": "1000", **env}  # untruncated reasons
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q", "-rs",
                           "test_needs_services.py"], cwd=tmp_path, env=full_env, capture_output=True, text=True,
                          timeout=300)


def test_with_ci_set_a_missing_browser_or_database_fails_its_tests_with_the_reason(tmp_path):
    result = run_without_services(tmp_path, CI="true")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 errors" in result.stdout and "skipped" not in result.stdout, result.stdout
    assert f"no chromium at {tmp_path / 'no-chromium'}, and CI is set" in result.stdout
    assert "no PostgreSQL server (STUDIO_TEST_POSTGRES_URL is not set), and CI is set" in result.stdout


def test_locally_a_missing_browser_or_database_skips_saying_how_to_get_it(tmp_path):
    result = run_without_services(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 skipped" in result.stdout, result.stdout
    skips = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) == 2 and all("run `bash scripts/test_services.sh` as root" in line for line in skips), skips
    assert any("set STUDIO_TEST_CHROMIUM" in line for line in skips), skips
    assert any("point STUDIO_TEST_POSTGRES_URL at a test database" in line for line in skips), skips


@pytest.mark.parametrize("ci", ["", "1"])
def test_a_postgresql_url_that_is_not_clearly_a_test_database_is_refused(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("STUDIO_TEST_POSTGRES_URL", "postgresql+psycopg2://studio:studio@127.0.0.1:5432/studio")
    with pytest.raises(pytest.fail.Exception, match="refuse a database whose name does not say it is a test one"):
        postgres_server()


def test_postgresql_tests_get_a_database_of_their_own_dropped_afterwards():
    server = make_url(postgres_server())
    with throwaway_postgres() as url:
        assert make_url(url).database != server.database
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE kept_until_the_end (id integer)"))
        assert inspect(engine).get_table_names() == ["kept_until_the_end"]  # it started empty
        # a connection left open, as a failing test may leave one, must not keep the database from going
        lingering = engine.connect()
    admin = create_engine(server)
    with admin.connect() as connection:
        left = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                  {"name": make_url(url).database}).all()
    admin.dispose()
    lingering.close()
    engine.dispose()
    assert left == []


@pytest.mark.slow
def test_a_studio_on_port_0_binds_a_free_port_and_says_which(tmp_path):
    studio = StudioProcess(tmp_path / "studio.log", tmp_path / "home")  # STUDIO_PORT=0
    try:
        url = studio.wait_until_up()
        assert studio.port > 0 and url == f"http://127.0.0.1:{studio.port}"
        assert urllib.request.urlopen(f"{url}/health", timeout=30).status == 200
    finally:
        studio.stop()
