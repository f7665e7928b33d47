"""A local stand-in for the Hugging Face Hub API: just the endpoints ``HfApi.create_repo`` and ``upload_folder``
call, on 127.0.0.1, recording what it received. Nothing leaves the machine.

Endpoints: ``POST /api/repos/create``, ``POST /api/validate-yaml``, ``POST /api/{type}s/{repo}/preupload/{rev}``
(every file is answered "regular", so its content rides in the commit), ``POST /api/{type}s/{repo}/commit/{rev}``
(NDJSON: a header line, then one ``file`` line per file with base64 content). ``mode = "401"`` answers every
request with 401 Unauthorized, as the Hub does for a bad token.
"""

from __future__ import annotations

import base64
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
    tokens: list[str] = field(default_factory=list)          # the bearer token of every request
    paths: list[str] = field(default_factory=list)           # every request line "METHOD /path"


REPO_PATH = re.compile(r"^/api/(models|datasets|spaces)/(.+?)/(preupload|commit)/([^/?]+)")


def keep_the_client_local(monkeypatch) -> None:
    """huggingface_hub's own side requests stay off the network in tests: no Xet storage, and no fetch of the
    Hub's agent registry (which the client requests from huggingface.co when it first builds headers)."""
    from huggingface_hub.utils import _detect_agent

    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
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
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        self.received.paths.append(f"{method} {request.path}")
        self.received.tokens.append((request.headers.get("Authorization") or "").removeprefix("Bearer "))
        if self.mode == "401":
            return self._reply(request, 401, {"error": "Invalid credentials in Authorization header"})
        if request.path == "/api/repos/create":
            payload = json.loads(body)
            self.received.repos.append(payload)
            prefix = "" if payload.get("type") in (None, "model") else f"{payload['type']}s/"
            repo = "/".join(p for p in (payload.get("organization"), payload["name"]) if p)
            return self._reply(request, 200, {"url": f"{self.url}/{prefix}{repo}", "name": repo})
        if request.path == "/api/validate-yaml":
            return self._reply(request, 200, {"warnings": []})
        found = REPO_PATH.match(request.path)
        if found and found.group(3) == "preupload":
            files = json.loads(body)["files"]
            return self._reply(request, 200, {"files": [{"path": f["path"], "uploadMode": "regular",
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
        kind, _, name = repo.partition("/")
        prefix = "" if kind == "models" else f"{kind}/"
        self._reply(request, 200, {"commitUrl": f"{self.url}/{prefix}{name}/commit/abc123", "commitOid": "abc123",
                                   "success": True})

    @staticmethod
    def _reply(request, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
