"""Pushes to the Hugging Face Hub with ``huggingface_hub.HfApi``: an export folder as a model repository, a
dataset version (its loader-ready files and dataset card) as a dataset repository. Repositories are created
private unless asked otherwise. The token is the one given, else ``HF_TOKEN`` (or a saved ``huggingface-cli
login``); the address is ``STUDIO_HUB_ENDPOINT``, else ``HF_ENDPOINT``, else huggingface.co.

When the Hub cannot be reached or refuses (a bad token, no write access, a network error), ``PushError`` says
which, what to do next, and where the local copy is kept. huggingface_hub is imported inside functions.
"""

from __future__ import annotations

import re
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from studio.data.export import export_zip
from studio.data.service import get_version
from studio.sharing.card import dataset_card_text
from studio.sharing.export import run_project
from studio.store import Store, record_action
from studio.store.projects import project_name

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
TOKENS_PAGE = "https://huggingface.co/settings/tokens"
Progress = Callable[[float, str], None]


class PushError(RuntimeError):
    """A push that did not happen; the message names the cause, the next step and the local copy."""


def resolve_token(token: str | None) -> str | None:
    """The token given, else HF_TOKEN, else the one a ``hf auth login`` saved."""
    if token and token.strip():
        return token.strip()
    from huggingface_hub import get_token

    return get_token()


def _endpoint(store: Store) -> str:
    from huggingface_hub import constants

    return (store.settings.hub_endpoint or "").rstrip("/") or constants.ENDPOINT


def _is_network_error(error: Exception) -> bool:
    # huggingface_hub's HTTP client (httpx2) raises its own transport errors, not OSError
    return isinstance(error, OSError) or type(error).__module__.split(".")[0].startswith("httpx")


def _refusal(status: int, repo_id: str, server: str) -> str:
    if status == 401:
        return (f"the Hub did not accept the token (HTTP 401{': ' + server if server else ''}). Check that it is a "
                f"current access token (create one with write access at {TOKENS_PAGE}) and pass it with --token "
                "or HF_TOKEN")
    if status == 403:
        return (f"the token may not write to '{repo_id}' (HTTP 403{': ' + server if server else ''}). Use a token "
                "with write access, and a namespace that is yours or your organisation's")
    if status == 404:
        return f"the Hub has no namespace or repository for '{repo_id}' (HTTP 404): check the repo id (OWNER/NAME)"
    return f"the Hub refused the push (HTTP {status}{': ' + server if server else ''})"


def push_folder(store: Store, folder: Path, repo_id: str, *, repo_type: str = "model", private: bool = True,
                token: str | None = None, kept: Path | None = None, message: str = "Upload from Gen Studio",
                progress: Progress | None = None, actor: str | None = None, project: str | None = None) -> dict:
    """Creates ``repo_id`` (if it does not exist; private unless ``private`` is False) and uploads ``folder`` to
    it in one commit. Returns ``{"repo_id", "repo_type", "url", "commit_url", "private", "files"}``. ``kept`` is
    the local copy a failure message points at (default: ``folder``). A push is recorded in the audit trail as
    ``hub.push`` by ``actor``."""
    from huggingface_hub import HfApi

    folder, kept = Path(folder), Path(kept or folder)
    keep_note = f"Nothing was lost: the {'dataset' if repo_type == 'dataset' else 'export'} is kept in {kept}."
    repo_id = (repo_id or "").strip()
    if not REPO_ID.fullmatch(repo_id):
        raise PushError(f"'{repo_id}' is not a Hub repository id: use OWNER/NAME (your user or organisation name, "
                        f"a slash, then letters, digits, '-', '_' or '.'). {keep_note}")
    token = resolve_token(token)
    if not token:
        raise PushError(f"no Hugging Face token: pass --token (the Share tab's token field) or set HF_TOKEN to an "
                        f"access token with write access ({TOKENS_PAGE}). {keep_note}")
    endpoint = _endpoint(store)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    try:
        url, commit = _create_and_upload(HfApi(endpoint=endpoint, token=token), folder, repo_id, repo_type, private,
                                         message, len(files), progress)
    except Exception as error:
        refusal = _explain(error, endpoint, repo_id)
        if refusal is None:
            raise
        raise PushError(f"{refusal}. {keep_note}") from error
    pushed = {"repo_id": repo_id, "repo_type": repo_type, "url": str(url), "commit_url": str(commit.commit_url),
              "private": bool(private), "files": files}
    record_action(store, actor, "hub.push", f"hub:{repo_type}/{repo_id}", project=project,
                  details={"url": pushed["url"], "private": pushed["private"], "source": str(kept)})
    return pushed


def _create_and_upload(api, folder: Path, repo_id: str, repo_type: str, private: bool, message: str, count: int,
                       progress: Progress | None):
    if progress:
        progress(0.1, f"creating {repo_type} repository {repo_id}")
    url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)  # an existing one is reused
    if progress:
        progress(0.3, f"uploading {count} files to {repo_id}")
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, commit_message=message)
    if progress:
        progress(1.0, f"pushed to {url}")
    return url, commit


def _explain(error: Exception, endpoint: str, repo_id: str) -> str | None:
    """Why the Hub refused or could not be reached, for people; None for an error that is not the Hub's."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(error, HfHubHTTPError):
        status = getattr(getattr(error, "response", None), "status_code", 0) or 0
        return _refusal(status, repo_id, (getattr(error, "server_message", None) or "").strip()[:200])
    if _is_network_error(error):
        return (f"the Hub at {endpoint} could not be reached ({type(error).__name__}: {error}). Check the network "
                "connection (and HF_ENDPOINT / STUDIO_HUB_ENDPOINT if you use a mirror), then push again")
    return None


def push_export(store: Store, export: dict, repo_id: str, *, private: bool = True, token: str | None = None,
                progress: Progress | None = None, actor: str | None = None) -> dict:
    """Pushes an export (what ``studio.sharing.export.export_run`` returned) as a model repository."""
    with store.session() as session:
        project = run_project(session, export["run_id"])
    return push_folder(store, Path(export["path"]), repo_id, private=private, token=token, progress=progress,
                       actor=actor, project=project,
                       message=f"Run {export['run_id']} step {export['step']} ({export['format']}) from Gen Studio")


def _without_examples(report_path: Path) -> None:
    """The cleaning report goes public without its examples: a removed or scrubbed item's text (an e-mail address
    the PII step replaced, say) must not leave the machine; the counts and reasons stay."""
    import json

    report = json.loads(report_path.read_text(encoding="utf-8"))
    for step in report.get("steps", []):
        step.pop("changed_examples", None)
        step["examples"] = [{"reason": e.get("reason")} for e in step.get("examples", [])]
    report_path.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")


def push_dataset(store: Store, ref: str, repo_id: str, *, private: bool = True, token: str | None = None,
                 license: str | None = None, actor: str | None = None, progress: Progress | None = None) -> dict:
    """Pushes dataset version ``ref`` (``DATASET_ID[:VERSION]``) as a dataset repository: the files in the layout
    ``studio data export`` writes (which the ``datasets`` loaders read), its cleaning report without the removed
    or changed items' text, and a dataset card (README.md)."""
    version = get_version(store, ref)
    with store.session() as session:
        project = project_name(session, version.dataset.project_id)
    staging_root = store.path("tmp")
    staging_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=staging_root) as scratch:
        folder = Path(scratch) / "dataset"
        archive = export_zip(store, ref, Path(scratch) / "dataset.zip")
        with zipfile.ZipFile(archive) as zipped:  # written by us a moment ago: no untrusted member names
            zipped.extractall(folder)
        _without_examples(folder / ".studio" / "report.json")
        (folder / "README.md").write_text(dataset_card_text(version, license=license, actor=actor), encoding="utf-8")
        result = push_folder(store, folder, repo_id, repo_type="dataset", private=private, token=token,
                             kept=store.path(version.path), progress=progress, actor=actor, project=project,
                             message=f"{version.dataset.name} version {version.version} from Gen Studio")
    return {**result, "dataset": f"{version.dataset_id}:{version.version}"}

