"""The web process: one ASGI app holding the editor studio at ``/``, the rater-only page at ``/rate``, sign-in,
and the operations endpoints ``/health``, ``/metrics`` and ``/status``.

The two Gradio apps are separate Blocks on purpose: the rating page's app has no training, deletion or export
function in it at all, so a rater cannot reach one through the UI *or* the API however a request is crafted. Two
locks guard each request when sign-in is on: ``AccessGate`` (below) sends people who are not signed in to
``/login`` and raters to ``/rate``, and Gradio's own ``auth_dependency`` refuses (401) any API call of the editor
app by someone who is not an editor.
"""

from __future__ import annotations

import hmac
import html
import secrets
import threading
import urllib.parse

from starlette.requests import Request  # at module level: FastAPI resolves the route functions' hints from here

from studio.auth import Access
from studio.store import Store

RATE = "/rate"
# Reachable without signing in: the sign-in itself and what load balancers and container health checks call.
PUBLIC = ("/login", "/login/", f"{RATE}/login", f"{RATE}/login/", "/logout", "/health", "/login/huggingface",
          "/login/callback")


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _wants_page(scope) -> bool:
    """A browser asking for a page (send it to the sign-in form), rather than an API call (answer 401/403)."""
    headers = dict(scope.get("headers") or [])
    return scope.get("method") == "GET" and b"text/html" in headers.get(b"accept", b"")


class AccessGate:
    """ASGI middleware (inside the session middleware, which puts ``scope["session"]``): who may go where."""

    def __init__(self, app, access: Access, metrics_token: str = ""):
        self.app, self.access, self.metrics_token = app, access, metrics_token

    def _monitoring(self, scope) -> bool:
        """A monitoring system reading /metrics with the configured bearer token."""
        if not self.metrics_token or scope["path"] != "/metrics":
            return False
        sent = dict(scope.get("headers") or []).get(b"authorization", b"").decode(errors="replace")
        return hmac.compare_digest(sent, f"Bearer {self.metrics_token}")

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or not self.access.enabled or scope["path"] in PUBLIC \
                or self._monitoring(scope):
            return await self.app(scope, receive, send)
        path = scope["path"]
        who = self.access.role_of(scope.get("session") or {})
        if who is None:
            target = path + ("?" + scope["query_string"].decode() if scope.get("query_string") else "")
            return await self._refuse(scope, receive, send, 401, "sign in first",
                                      "/login?" + urllib.parse.urlencode({"next": target}))
        if who[1] == "rater" and not _under(path, RATE):
            return await self._refuse(scope, receive, send, 403,
                                      f"{who[0]} is a rater: raters can use the rating page {RATE}/ only", RATE + "/")
        return await self.app(scope, receive, send)

    async def _refuse(self, scope, receive, send, status: int, message: str, page: str) -> None:
        from starlette.responses import JSONResponse, RedirectResponse

        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        response = RedirectResponse(page, status_code=303) if _wants_page(scope) else \
            JSONResponse({"error": message}, status_code=status)
        await response(scope, receive, send)


def session_secret(store: Store) -> str:
    """The key signing sign-in cookies: the setting, else a random one kept (0600) under STUDIO_HOME."""
    if store.settings.session_secret:
        return store.settings.session_secret
    from studio.auth import write_private

    path = store.home / "session_secret"
    if not path.exists():
        write_private(path, secrets.token_hex(32))
    return path.read_text().strip()


def private_files(store: Store) -> list[str]:
    """Files under STUDIO_HOME no page may serve: the database, the cookie key, the key naming blind rating
    copies (with it a rater could tell the variants apart), and a users file kept there."""
    from studio.auth import Users

    names = ["studio.db", "studio.db-wal", "studio.db-shm", "session_secret", "blind/key"]
    paths = [str(store.home / name) for name in names]
    users_file = Users.file_of(store.settings.users)
    if users_file is not None:
        paths.append(str(users_file.resolve()))
    return paths


LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Gen Studio · sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;background:#f5f6fa;display:flex;justify-content:center;padding-top:10vh}}
form{{background:#fff;padding:2rem;border-radius:12px;box-shadow:0 2px 12px #0002;width:22rem}}
input{{width:100%;padding:.6rem;margin:.3rem 0 1rem;box-sizing:border-box;border:1px solid #ccd;border-radius:6px}}
button,.hf{{width:100%;padding:.7rem;border:0;border-radius:6px;background:#4f46e5;color:#fff;font-size:1rem;
cursor:pointer;display:block;text-align:center;text-decoration:none;box-sizing:border-box}}
.hf{{background:#222;margin-top:.8rem}}
.error{{color:#b91c1c;margin-bottom:1rem}}</style></head><body>
<form method="post" action="/login"><h2>Gen Studio</h2>{message}
<label>User name<input name="username" id="username" autocomplete="username" required autofocus></label>
<label>Password<input name="password" id="password" type="password" autocomplete="current-password" required></label>
<input type="hidden" name="next" value="{next}"><button type="submit" id="sign-in">Sign in</button>{oauth}</form>
</body></html>"""


def _safe_next(target: str | None, role: str | None = None) -> str:
    """Only a path on this site (never ``//elsewhere`` or a full URL): sign-in must not redirect off-site."""
    home = RATE + "/" if role == "rater" else "/"
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return home
    if role == "rater" and not _under(urllib.parse.urlparse(target).path, RATE):
        return home
    return target


def add_sign_in_routes(app, access: Access) -> None:
    from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse

    def page(next_target: str, message: str = "", status: int = 200):
        oauth = (f'<a class="hf" href="/login/huggingface?{urllib.parse.urlencode({"_target_url": next_target})}">'
                 "Sign in with Hugging Face</a>") if access.oauth else ""
        error = f'<div class="error" id="sign-in-error">{html.escape(message)}</div>' if message else ""
        return HTMLResponse(LOGIN_PAGE.format(message=error, next=html.escape(next_target), oauth=oauth),
                            status_code=status)

    async def show_form(request: Request):
        if not access.enabled:  # nothing to sign in to on a personal machine
            return RedirectResponse("/", status_code=303)
        return page(_safe_next(request.query_params.get("next")))

    async def sign_in(request: Request):
        import asyncio

        form = await request.form()
        name, password = str(form.get("username", "")).strip(), str(form.get("password", ""))
        browser = "text/html" in request.headers.get("accept", "")
        key = f"{name}@{request.client.host if request.client else ''}"
        wait = access.throttle.wait_seconds(key)
        if wait:
            message = f"Too many failed sign-ins for {name}: try again in {wait / 60:.0f} min."
            return page(_safe_next(str(form.get("next", ""))), message, 429) if browser else \
                JSONResponse({"error": message}, status_code=429)
        user = await asyncio.to_thread(access.users.check, name, password)  # scrypt: keep the event loop free
        if user is None:
            access.throttle.failed(key)
            message = "Wrong user name or password."
            return page(_safe_next(str(form.get("next", ""))), message, 401) if browser else \
                JSONResponse({"error": message}, status_code=401)
        access.throttle.succeeded(key)
        request.session.clear()
        request.session["user"] = user.name
        target = _safe_next(str(form.get("next", "")), user.role)
        # gradio_client signs in with this same form and counts only a 2xx answer as success.
        return RedirectResponse(target, status_code=303) if browser else \
            JSONResponse({"success": True, "user": user.name, "role": user.role})

    async def sign_out(request: Request):
        request.session.clear()
        return RedirectResponse("/login" if access.enabled else "/", status_code=303)

    for path in ("/login", "/login/"):
        app.add_api_route(path, show_form, methods=["GET"], include_in_schema=False)
    for path in ("/login", "/login/", f"{RATE}/login", f"{RATE}/login/"):  # the rater app's client posts here
        app.add_api_route(path, sign_in, methods=["POST"], include_in_schema=False)
    app.add_api_route("/logout", sign_out, methods=["GET"], include_in_schema=False)

    async def rating_page():  # people type /rate; the mounted app lives at /rate/
        return RedirectResponse(RATE + "/", status_code=307)

    app.add_api_route(RATE, rating_page, methods=["GET"], include_in_schema=False)


def add_operations_routes(app, store: Store) -> None:
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse

    from studio import ops

    # plain functions, not async: FastAPI runs them in its thread pool, so a database query, walking a large
    # STUDIO_HOME or a slow nvidia-smi never holds the event loop that serves every page
    def health():
        found = ops.health(store)
        return JSONResponse(found, status_code=200 if found["status"] != "down" else 503)

    def metrics():
        return PlainTextResponse(ops.prometheus_text(ops.collect(store)), media_type="text/plain; version=0.0.4")

    def status_page():
        return HTMLResponse(ops.status_html(ops.collect(store)))

    app.add_api_route("/health", health, methods=["GET"], include_in_schema=False)
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    app.add_api_route("/status", status_page, methods=["GET"], include_in_schema=False)


def build_server(store: Store, access: Access | None = None):
    """The whole web process's ASGI app (see the module docstring)."""
    import gradio as gr
    from fastapi import FastAPI
    from starlette.middleware.sessions import SessionMiddleware

    from studio.ui.app import build_app, build_rater_app

    settings = store.settings
    access = access or Access.from_settings(settings)
    server = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    add_operations_routes(server, store)
    add_sign_in_routes(server, access)
    # added first = innermost: the gate reads the session that the session middleware (added below) puts in scope
    server.add_middleware(AccessGate, access=access, metrics_token=settings.metrics_token)
    if access.oauth:
        from gradio.oauth import attach_oauth

        attach_oauth(server)  # /login/huggingface, /login/callback and the (https, iframe-friendly) session
    else:
        server.add_middleware(SessionMiddleware, secret_key=session_secret(store), session_cookie="studio_session",
                              same_site="none" if settings.on_spaces else "lax", https_only=settings.on_spaces,
                              max_age=7 * 24 * 3600)

    def signed_in(request) -> str | None:
        who = access.role_of(request.session)
        return who[0] if who else None

    def editor(request) -> str | None:
        who = access.role_of(request.session)
        return who[0] if who and who[1] == "editor" else None

    common = dict(max_file_size=f"{settings.max_upload_mb}mb", blocked_paths=private_files(store),
                  theme=gr.themes.Soft(), ssr_mode=False, show_error=True)
    rater_app = build_rater_app(store)
    rater_app.queue(default_concurrency_limit=4)
    # Raters see media only through the blind copies (names that do not give the variant away), never samples/.
    gr.mount_gradio_app(server, rater_app, RATE, auth_dependency=signed_in if access.enabled else None,
                        allowed_paths=[str(store.home / "blind")], **common)
    studio_app = build_app(store)
    studio_app.queue(default_concurrency_limit=4)
    gr.mount_gradio_app(server, studio_app, "/", auth_dependency=editor if access.enabled else None,
                        allowed_paths=[str(store.home)], **common)
    return server


def start_dispatcher(store: Store, every: float = 2.0) -> None:
    """Queued runs and background tasks start by themselves, and runs, tasks or sample sets whose process died are
    marked so: a daemon thread does that every few seconds while the studio runs."""
    import logging
    import time

    from studio.generation.service import reap_sets
    from studio.tasks.service import dispatch as dispatch_tasks
    from studio.training.jobs import dispatch as dispatch_runs

    def loop() -> None:
        while True:
            for step in (dispatch_runs, dispatch_tasks, reap_sets):  # reap_sets: a dead process's sets stop "running"
                try:
                    step(store)
                except Exception:  # noqa: BLE001 - a failed step is logged and retried, never fatal to the UI
                    logging.getLogger("studio").exception("dispatch failed: %s", step.__name__)
            time.sleep(every)

    threading.Thread(target=loop, name="dispatcher", daemon=True).start()


def serve(settings, block: bool = True):
    """Open the store and serve the studio. ``block=False`` (tests, benchmarks) returns the running uvicorn
    server; call ``server.should_exit = True`` to stop it."""
    import uvicorn

    from studio.store import open_store

    store = open_store(settings)
    access = Access.from_settings(settings)  # a broken users file stops the start here, with its reason
    start_dispatcher(store)
    app = build_server(store, access)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                                           timeout_graceful_shutdown=5))  # open event streams must not hold a restart
    sign_in = "on" if access.enabled else "off (set STUDIO_USERS to turn it on)"
    print(f"Gen Studio at http://{settings.host}:{settings.port} (STUDIO_HOME {store.home}; sign-in {sign_in})",
          flush=True)
    if block:
        server.run()
        return server
    threading.Thread(target=server.run, name="web", daemon=True).start()
    return server
