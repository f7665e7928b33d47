"""A local stand-in for the Hugging Face Hub API: just the endpoints ``HfApi.create_repo`` and ``upload_folder``
call, on 127.0.0.1, recording what it received. Nothing leaves the machine.

Endpoints: ``POST /api/repos/create``, ``POST /api/validate-yaml``, ``POST /api/{type}s/{repo}/preupload/{rev}``
(binary files — ``LFS_SUFFIXES`` — are answered "lfs", the rest "regular", as the Hub routes weights to large-file
storage), the LFS batch API (``POST /{prefix}{repo}.git/info/lfs/objects/batch``, basic transfer: one ``PUT`` of
the content to an upload URL here), and ``POST /api/{type}s/{repo}/commit/{rev}`` (NDJSON: a header line, then
a ``file`` line per regular file with base64 content, an ``lfsFile`` line per LFS file naming its sha256).
``mode = "401"`` answers every request with 401 Unauthorized, as the Hub does for a bad token; ``"403"`` with 403
Forbidden, as for a token that may not write to the namespace.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    repos: list[dict] = field(default_factory=list)          # create-repo payloads
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # "type/repo" → path → content
    commits: list[dict] = field(default_factory=list)        # commit header values
    tokens: list[str] = field(default_factory=list)          # the bearer token of every API request
    paths: list[str] = field(default_factory=list)           # every request line "METHOD /path"
    lfs: dict[str, bytes] = field(default_factory=dict)      # sha256 → content uploaded through the LFS API
    lfs_paths: set[str] = field(default_factory=set)         # "type/repo/path" of files committed as LFS


REPO_PATH = re.compile(r"^/api/(models|datasets|spaces)/(.+?)/(preupload|commit)/([^/?]+)")
LFS_BATCH = re.compile(r"^/(?:(datasets|spaces)/)?(.+?)\.git/info/lfs/objects/batch$")
LFS_SUFFIXES = (".safetensors", ".png", ".wav", ".zip")
REFUSALS = {"401": "Invalid credentials in Authorization header",  # what the Hub says for a bad token
            "403": "You don't have the rights to create a model under the namespace \"ana\""}


def keep_the_client_local(monkeypatch) -> None:
    """huggingface_hub's own side requests stay off the network in tests: no Xet storage, and no fetch of the
    Hub's agent registry (which the client requests from huggingface.co when it first builds headers)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent

    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")  # for clients started from here; this one read it at import:
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(_detect_agent, "_registry", _detect_agent._EMPTY_REGISTRY)


class HubStandIn:
    def __init__(self):
        self.received = Received()
        self.mode = "ok"
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet tests
                pass

            def do_GET(self):
                standin._handle(self, "GET")

            def do_POST(self):
                standin._handle(self, "POST")

            def do_PUT(self):
                standin._handle(self, "PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "HubStandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- requests

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        body = self._body(request)
        self.received.paths.append(f"{method} {request.path}")
        if not request.path.startswith("/lfs-upload/"):  # upload URLs are pre-signed: no token, as on the Hub
            self.received.tokens.append((request.headers.get("Authorization") or "").removeprefix("Bearer "))
        if self.mode in REFUSALS:
            return self._reply(request, int(self.mode), {"error": REFUSALS[self.mode]})
        if request.path == "/api/repos/create":
            payload = json.loads(body)
            self.received.repos.append(payload)
            prefix = "" if payload.get("type") in (None, "model") else f"{payload['type']}s/"
            repo = "/".join(p for p in (payload.get("organization"), payload["name"]) if p)
            return self._reply(request, 200, {"url": f"{self.url}/{prefix}{repo}", "name": repo})
        if request.path == "/api/validate-yaml":
            return self._reply(request, 200, {"warnings": []})
        if method == "PUT" and request.path.startswith("/lfs-upload/"):
            self.received.lfs[request.path.rsplit("/", 1)[1]] = body
            return self._reply(request, 200, {})
        if LFS_BATCH.match(request.path):
            objects = json.loads(body)["objects"]
            return self._reply(request, 200, {"transfer": "basic", "objects": [
                {"oid": o["oid"], "size": o["size"], "actions": {"upload": {"href": f"{self.url}/lfs-upload/{o['oid']}"}}}
                for o in objects]})
        found = REPO_PATH.match(request.path)
        if found and found.group(3) == "preupload":
            files = json.loads(body)["files"]
            return self._reply(request, 200, {"files": [
                {"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular",
                 "shouldIgnore": False} for f in files]})
        if found and found.group(3) == "commit":
            return self._commit(request, f"{found.group(1)}/{found.group(2)}", body)
        return self._reply(request, 404, {"error": f"the stand-in has no {method} {request.path}"})

    def _commit(self, request, repo: str, body: bytes) -> None:
        files = self.received.files.setdefault(repo, {})
        for line in body.decode().splitlines():
            entry = json.loads(line)
            if entry["key"] == "header":
                self.received.commits.append(entry["value"])
            elif entry["key"] == "file":
                files[entry["value"]["path"]] = base64.b64decode(entry["value"]["content"])
            elif entry["key"] == "lfsFile":  # uploaded before the commit: the content must match its hash
                content = self.received.lfs[entry["value"]["oid"]]
                assert hashlib.sha256(content).hexdigest() == entry["value"]["oid"]
                files[entry["value"]["path"]] = content
                self.received.lfs_paths.add(f"{repo}/{entry['value']['path']}")
        kind, _, name = repo.partition("/")
        prefix = "" if kind == "models" else f"{kind}/"
        self._reply(request, 200, {"commitUrl": f"{self.url}/{prefix}{name}/commit/abc123", "commitOid": "abc123",
                                   "success": True})

    @staticmethod
    def _body(request) -> bytes:
        if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(request.rfile.readline().strip(), 16)) > 0:
                chunks.append(request.rfile.read(size))
                request.rfile.readline()
            request.rfile.readline()
            return b"".join(chunks)
        length = int(request.headers.get("Content-Length") or 0)
        return request.rfile.read(length) if length else b""

    @staticmethod
    def _reply(request, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
