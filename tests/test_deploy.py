"""Running the studio elsewhere: as a Hugging Face Space (front matter, requirements.txt, the warning without
persistent storage, sign-in with Hugging Face accounts) and in Docker / Compose with PostgreSQL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def pyproject_dependencies() -> list[str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return project["dependencies"] + extras["postgres"] + extras["oauth"]


def test_the_spaces_requirements_are_the_projects_dependencies():
    listed = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert listed == pyproject_dependencies()


@pytest.mark.slow
def test_gradio_analytics_and_hub_telemetry_are_off_without_being_asked(tmp_path):
    import os

    env = {name: value for name, value in os.environ.items()
           if name not in ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_DISABLE_TELEMETRY", "DISABLE_TELEMETRY", "DO_NOT_TRACK")}
    env["PYTHONPATH"] = str(ROOT)
    probe = textwrap.dedent("""
        import json
        import studio_app  # the Spaces / `python studio_app.py` entry point, as a person starts it outside Docker
        import gradio, huggingface_hub.constants
        print(json.dumps([gradio.Blocks().analytics_enabled, huggingface_hub.constants.HF_HUB_DISABLE_TELEMETRY]))
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [False, True]


def test_the_readme_front_matter_makes_a_gradio_space_of_studio_app():
    import gradio

    front = yaml.safe_load((ROOT / "README.md").read_text().split("---")[1])
    assert front["sdk"] == "gradio" and (ROOT / front["app_file"]).exists()
    assert front["app_file"] == "studio_app.py"
    assert front["sdk_version"].split(".")[0] == gradio.__version__.split(".")[0]


def test_on_a_space_it_listens_on_all_interfaces(monkeypatch, tmp_path):
    from studio.settings import load_settings

    monkeypatch.setenv("SPACE_ID", "team/gen-studio")
    settings = load_settings(home=tmp_path)
    assert settings.on_spaces and settings.host == "0.0.0.0"


def markdown_values(app) -> str:
    return "\n".join(str(c.get("props", {}).get("value")) for c in app.config["components"]
                     if c.get("type") == "markdown")


def test_a_space_without_persistent_storage_says_data_is_lost_on_restart(monkeypatch, tmp_path):
    from studio.settings import load_settings
    from studio.store import open_store
    from studio.ui.app import build_app

    store = open_store(load_settings(home=tmp_path / "home"))
    try:
        assert "no persistent storage" not in markdown_values(build_app(store))  # not a Space: nothing to say
        monkeypatch.setenv("SPACE_ID", "team/gen-studio")
        assert "lost when it restarts" in markdown_values(build_app(store))
    finally:
        store.close()


def test_compose_runs_the_studio_on_its_postgres_with_a_volume_for_the_home():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    postgres, studio = compose["services"]["postgres"], compose["services"]["studio"]
    url = studio["environment"]["STUDIO_DATABASE_URL"]
    match = re.match(r"postgresql\+psycopg2://(\w+):(.+)@(\w+):5432/(\w+)$", url)
    assert match, url
    user, password, host, database = match.groups()
    assert host == "postgres" and user == postgres["environment"]["POSTGRES_USER"]
    assert password == postgres["environment"]["POSTGRES_PASSWORD"]
    assert database == postgres["environment"]["POSTGRES_DB"]
    assert studio["depends_on"]["postgres"]["condition"] == "service_healthy"
    dockerfile = (ROOT / "Dockerfile").read_text()
    home = re.search(r"STUDIO_HOME=(\S+)", dockerfile).group(1)
    [mount] = [v.split(":")[1] for v in studio["volumes"]]
    assert home.startswith(mount + "/")  # the studio's home lives on the named volume
    assert "7860:7860" in studio["ports"]
    assert re.search(r"HEALTHCHECK .*\n.*127\.0\.0\.1:7860/health", dockerfile)
    assert 'pip install ".[postgres,oauth]"' in dockerfile


OAUTH_SCRIPT = textwrap.dedent("""
    import base64, hashlib, json, os, sys, time
    os.environ.update(SYSTEM="spaces", SPACE_ID="owner/studio", SPACE_AUTHOR_NAME="owner", OAUTH_CLIENT_ID="client",
                      OAUTH_CLIENT_SECRET="secret", OAUTH_SCOPES="openid profile",
                      OPENID_PROVIDER_URL="https://huggingface.co", SPACE_HOST="testserver", STUDIO_HOME=sys.argv[1])
    from itsdangerous import TimestampSigner
    from starlette.testclient import TestClient
    from studio.settings import load_settings
    from studio.store import open_store
    from studio.ui.server import build_server

    app = build_server(open_store(load_settings()))
    # What Hugging Face's OAuth callback leaves in the session, signed as gradio.oauth's middleware signs it.
    signer = TimestampSigner(hashlib.sha256(b"secret-v4").hexdigest())
    def cookie(name):
        info = {"oauth_info": {"userinfo": {"preferred_username": name}, "expires_at": time.time() + 3600}}
        return signer.sign(base64.b64encode(json.dumps(info).encode())).decode()
    found = {}
    with TestClient(app, base_url="https://testserver") as client:
        found["login_page"] = "Sign in with Hugging Face" in client.get("/login").text
        found["anonymous"] = client.get("/config").status_code
        client.cookies.set("session", cookie("owner"))
        found["owner"] = client.get("/config").status_code
        client.cookies.set("session", cookie("visitor"))
        found["visitor"] = client.get("/config").status_code
        found["visitor_rate"] = client.get("/rate/config").status_code
    print(json.dumps(found))
""")


@pytest.mark.slow
def test_hugging_face_sign_in_on_a_space_makes_the_owner_an_editor_and_others_raters(tmp_path):
    done = subprocess.run([sys.executable, "-c", OAUTH_SCRIPT, str(tmp_path / "home")], capture_output=True,
                          text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {"login_page": True, "anonymous": 401, "owner": 200, "visitor": 403, "visitor_rate": 200}


def test_transformers_fetches_no_hub_kernels_unless_asked(tmp_path):
    """transformers (with `kernels`, which it requires) swaps in compiled code from the Hub on CUDA: offline that
    fails a run, online it runs code nobody asked for. The studio turns it off in every process; a person's own
    USE_HUB_KERNELS=YES still wins."""
    import os

    probe = ("import studio, json; from transformers.integrations.hub_kernels import _kernels_enabled; "
             "print(json.dumps(_kernels_enabled()))")
    found = {}
    for asked in (None, "YES"):
        env = {name: value for name, value in os.environ.items() if name != "USE_HUB_KERNELS"}
        env.update({"PYTHONPATH": str(ROOT), **({"USE_HUB_KERNELS": asked} if asked else {})})
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        found[asked] = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {None: False, "YES": True}
