"""Deployments' lifecycle: a real serving process per deployment (a LoRA checkpoint of the tiny Llama trained by the
studio's worker code: test_generation's ``lab``), answering over HTTP once running, stopped cleanly, marked failed
with its log's end when it dies, brought back by a new studio start, and driven by `studio deploy ... --json`."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request

import pytest
from sqlalchemy import func, select

from studio.cli import main as cli_main
from studio.processes import process_alive
from studio.serving import process as serving_process
from studio.serving.service import (DeployError, delete_deployment, get_deployment, list_deployments,
                                    reap_deployments, recover_deployments, restart_deployment, start_deployment,
                                    stop_deployment, wait_until_answered)
from studio.settings import load_settings
from studio.status import DeployStatus
from studio.store import list_actions, open_store
from studio.store.tables import Deployment
from test_generation import lab  # noqa: F401 - a module-scoped fixture: a LoRA run of the tiny Llama (steps 2, 4)
from test_text_backend import rows, tiny_folder  # noqa: F401 - module-scoped fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", autouse=True)
def no_process_left(lab):
    """A test that failed half-way leaves no serving process behind."""
    yield
    for view in list_deployments(lab["store"]):
        if view["status"] in (DeployStatus.STARTING, DeployStatus.RUNNING):
            stop_deployment(lab["store"], view["deployment_id"], grace=2)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def count_deployments(store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count(Deployment.id)))


def test_a_deployment_answers_over_http_once_running_and_stops_cleanly(lab):
    store, run = lab["store"], lab["run"]
    view = start_deployment(store, [str(run)], actor="ana")

    assert view["status"] == DeployStatus.RUNNING and view["url"].startswith("http://127.0.0.1:")
    assert view["name"] == f"run-{run}" and view["project"] == "default"
    assert view["models"] == [{"name": f"run-{run}-step-4", "ref": f"{run}:4"}]  # the last checkpoint, pinned
    assert get_json(f"{view['url']}/health")["status"] == "ok"
    assert [m["id"] for m in get_json(f"{view['url']}/v1/models")["data"]] == [f"run-{run}-step-4"]
    pid = view["pid"]
    assert process_alive(pid)

    stopped = stop_deployment(store, view["deployment_id"], actor="ana")

    assert stopped["status"] == DeployStatus.STOPPED and stopped["stopped_at"]
    assert not process_alive(pid)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{view['url']}/health", timeout=2)
    assert [a["action"] for a in list_actions(store, project="default")[:2]] == ["deployment.stop", "deployment.start"]
    assert get_deployment(store, view["deployment_id"])["status"] == DeployStatus.STOPPED  # the process wrote nothing
    with pytest.raises(DeployError, match="stopped already"):
        stop_deployment(store, view["deployment_id"])


def test_a_bad_reference_or_setting_is_a_clear_error_and_leaves_no_row(lab):
    store, run = lab["store"], lab["run"]
    before = count_deployments(store)
    with pytest.raises(DeployError, match="no run 999"):
        start_deployment(store, ["999"])
    with pytest.raises(DeployError, match="no checkpoint at step 7; its checkpoints are at steps 2, 4"):
        start_deployment(store, [f"{run}:7"])
    with pytest.raises(DeployError, match="quantize"):
        start_deployment(store, [str(run)], quantize="fp3")
    with pytest.raises(DeployError, match="port 70000"):
        start_deployment(store, [str(run)], port=70000)
    with pytest.raises(DeployError, match="not 'elsewhere'"):
        start_deployment(store, [str(run)], project="elsewhere")
    assert count_deployments(store) == before


def test_a_killed_process_is_failed_with_its_log_tail_and_can_be_restarted(lab):
    store, run = lab["store"], lab["run"]
    view = start_deployment(store, [f"{run}:2", f"{run}:4"], name="to-kill")
    os.kill(view["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while process_alive(view["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)

    assert reap_deployments(store) == [view["deployment_id"]]

    failed = get_deployment(store, view["deployment_id"])
    assert failed["status"] == DeployStatus.FAILED
    assert failed["error"].startswith("its serving process died. Last lines of its log:")
    assert f"deployment {view['deployment_id']} serving at {view['url']}" in failed["error"]  # its own log's end

    again = restart_deployment(store, view["deployment_id"])
    assert again["status"] == DeployStatus.RUNNING and again["pid"] != view["pid"] and again["error"] is None
    assert get_json(f"{again['url']}/health")["status"] == "ok"
    stop_deployment(store, view["deployment_id"])


def test_the_studio_starting_again_brings_back_what_served_and_fails_what_never_answered(lab):
    store, run = lab["store"], lab["run"]
    served = start_deployment(store, [str(run)], name="survivor")
    alive = start_deployment(store, [str(run)], name="outlived-the-studio")
    os.kill(served["pid"], signal.SIGKILL)  # the machine restarted: the process is gone, its row still says running
    while process_alive(served["pid"]):
        time.sleep(0.1)
    with store.session() as session:  # a start the restart interrupted before it answered
        stuck = Deployment(name="stuck", project="default", models=served["models"], status=DeployStatus.STARTING,
                           pid=served["pid"])
        session.add(stuck)
    studio = open_store(load_settings(home=lab["home"]))  # a new studio process opens the store

    recovered = recover_deployments(studio)

    assert recovered == {"restarted": [served["deployment_id"]], "failed": [stuck.id]}
    back = wait_until_answered(studio, served["deployment_id"], timeout=120)
    assert back["status"] == DeployStatus.RUNNING and get_json(f"{back['url']}/health")["status"] == "ok"
    assert get_deployment(studio, alive["deployment_id"])["pid"] == alive["pid"]  # left serving, not restarted
    assert "went away before it answered" in get_deployment(studio, stuck.id)["error"]
    assert recover_deployments(studio) == {"restarted": [], "failed": []}  # never again and again
    for deployment_id in (served["deployment_id"], alive["deployment_id"]):
        stop_deployment(studio, deployment_id)
    studio.close()


def test_a_port_in_use_fails_the_start_with_the_reason(lab):
    store, run = lab["store"], lab["run"]
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(DeployError, match=r"failed: could not listen on 127\.0\.0\.1:\d+ \(is the port taken"):
            start_deployment(store, [str(run)], name="clash", port=taken.getsockname()[1])
    finally:
        taken.close()
    assert list_deployments(store)[0]["name"] == "clash"  # the row stays, failed, to be restarted on another port


def test_an_error_building_the_application_fails_the_deployment_with_the_message(lab, monkeypatch):
    store, run = lab["store"], lab["run"]
    with store.session() as session:
        row = Deployment(name="broken", project="default", models=[{"name": "base", "ref": "base"}],
                         status=DeployStatus.STARTING)
        session.add(row)

    def refuses(store, deployment_id):
        raise ValueError("nf4 needs a CUDA GPU: pick int8 or none")

    monkeypatch.setattr("studio.serving.app.create_app", refuses)
    assert serving_process.serve_deployment(store, row.id) == 1
    failed = get_deployment(store, row.id)
    assert failed["status"] == DeployStatus.FAILED
    assert failed["error"] == "ValueError: nf4 needs a CUDA GPU: pick int8 or none"
    delete_deployment(store, row.id)


def test_names_are_readable_unique_and_a_taken_one_is_refused(lab):
    store, run = lab["store"], lab["run"]
    taken = {view["name"] for view in list_deployments(store)}
    first = start_deployment(store, [str(run)], wait=False)
    second = start_deployment(store, [str(run)], wait=False)
    try:
        free = [name for name in (f"run-{run}", *(f"run-{run}-{n}" for n in range(2, 50))) if name not in taken]
        assert [first["name"], second["name"]] == free[:2]  # after the run: run-N, else run-N-2, run-N-3, ...
        assert second["status"] == DeployStatus.STARTING
        with pytest.raises(DeployError, match="exists already"):
            start_deployment(store, [str(run)], name=first["name"])
    finally:
        for view in (first, second):
            stop_deployment(store, view["deployment_id"], grace=2)
    assert {get_deployment(store, v["deployment_id"])["status"] for v in (first, second)} == {DeployStatus.STOPPED}


def cli(capsys, home, *argv) -> tuple[int, dict]:
    code = cli_main(["--home", str(home), *argv, "--json"])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_deploy_start_list_show_stop_print_json(lab, capsys):
    home, run = lab["home"], lab["run"]
    code, started = cli(capsys, home, "deploy", "start", f"{run}:2", "--name", "from-the-cli", "--port", "0")
    assert code == 0
    assert set(started) == {"deployment_id", "name", "url", "models", "quantize", "weight_bytes", "status"}
    assert (started["name"], started["status"], started["quantize"]) == ("from-the-cli", "running", "none")
    assert get_json(f"{started['url']}/health")["status"] == "ok"

    code, listed = cli(capsys, home, "deploy", "list")
    assert code == 0 and started["deployment_id"] in [d["deployment_id"] for d in listed["deployments"]]
    code, shown = cli(capsys, home, "deploy", "show", str(started["deployment_id"]))
    assert code == 0 and shown["url"] == started["url"] and shown["quality"]["counts"]["requests"] == 0
    code, stopped = cli(capsys, home, "deploy", "stop", str(started["deployment_id"]))
    assert code == 0 and stopped["status"] == "stopped"

    code, refused = cli(capsys, home, "deploy", "start", "999")
    assert code == 2 and refused["error"].startswith("no run 999")
    code, refused = cli(capsys, home, "deploy", "show", "9999")
    assert code == 2 and refused["error"].startswith("no deployment 9999")


def test_a_process_whose_row_was_stopped_elsewhere_ends_by_itself(lab):
    """A stop from another machine cannot signal the process: it reads its row at every heartbeat and ends."""
    store, run = lab["store"], lab["run"]
    view = start_deployment(store, [str(run)], name="stopped-from-afar")
    with store.session() as session:
        session.get(Deployment, view["deployment_id"]).status = DeployStatus.STOPPED
    deadline = time.monotonic() + 30
    while process_alive(view["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not process_alive(view["pid"])
    assert get_deployment(store, view["deployment_id"])["status"] == DeployStatus.STOPPED


def test_cli_deploy_keys_add_list_revoke(store, capsys):
    """The key functions are h-serve's (studio.serving.keys): skipped on a branch without them."""
    pytest.importorskip("studio.serving.keys")
    code, added = cli(capsys, store.home, "deploy", "keys", "add", "newsroom")
    assert code == 0 and set(added) == {"name", "key"} and added["key"].startswith("gs-")
    code, listed = cli(capsys, store.home, "deploy", "keys", "list")
    assert code == 0 and [k["name"] for k in listed["keys"]] == ["newsroom"]
    assert added["key"] not in json.dumps(listed) and "key_hash" not in listed["keys"][0]
    code, refused = cli(capsys, store.home, "deploy", "keys", "add", "newsroom")
    assert code == 2 and "newsroom" in refused["error"]
    code, revoked = cli(capsys, store.home, "deploy", "keys", "revoke", "newsroom")
    assert code == 0 and revoked == {"name": "newsroom", "revoked": True}
    code, refused = cli(capsys, store.home, "deploy", "keys", "revoke", "nobody")
    assert code == 2 and "nobody" in refused["error"]


def test_a_deployment_serves_more_checkpoints_than_generate_compares(lab):
    """Generate compares at most five variants side by side; a deployment serves a base and any number of its
    family's checkpoints (here the base and six LoRA runs, each an adapter on the one base)."""
    from test_generation import add_run

    store, run = lab["store"], lab["run"]
    runs = [run] + [add_run(store, like=run) for _ in range(5)]
    view = start_deployment(store, ["base"] + [str(r) for r in runs], name="many", wait=False)
    try:
        assert [m["ref"] for m in view["models"]] == ["base"] + [f"{r}:4" for r in runs]
        assert len({m["name"] for m in view["models"]}) == 7
    finally:
        stop_deployment(store, view["deployment_id"], grace=2)
        delete_deployment(store, view["deployment_id"])
