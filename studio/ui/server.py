"""The web process: one ASGI app holding the editor studio at ``/``, the rater-only page at ``/rate``, sign-in,
and the operations endpoints ``/health``, ``/metrics`` and ``/status``.

The two Gradio apps are separate Blocks on purpose: the rating page's app has no training, deletion or export
function in it at all, so a rater cannot reach one through the UI *or* the API however a request is crafted. Two
locks guard each request when sign-in is on: ``AccessGate`` (below) sends people who are not signed in to
``/login`` and raters to ``/rate``, and Gradio's own ``auth_dependency`` refuses (401) any API call of the editor
app by someone who is not an editor. Around both, ``SameSiteOnly`` answers only the studio's own host names and
pages; under both, every handler takes only files uploaded through the page (``studio.ui.uploads``), and the rating
app takes none at all.
"""

from __future__ import annotations

import hmac
import html
import math
import secrets
import threading
import urllib.parse

from starlette.datastructures import Headers
from starlette.requests import Request  # at module level: FastAPI resolves the route functions' hints from here
from starlette.responses import JSONResponse

from studio.auth import SESSION_SECONDS, Access
from studio.roles import Role
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
        if who[1] == Role.RATER and not _under(path, RATE):
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


def _host_name(netloc: str) -> str | None:
    """``example.com`` of ``example.com:7860`` (``::1`` of ``[::1]:7860``); None when it is not a host name."""
    try:
        return urllib.parse.urlsplit("//" + netloc).hostname or None
    except ValueError:
        return None


def _listed(name: str | None, patterns: list[str]) -> bool:
    """``name`` is one of ``patterns``: a name, ``*.example.com`` (its subdomains) or ``*`` (any name)."""
    return bool(name) and any(pattern == "*" or name == pattern
                              or (pattern.startswith("*.") and name.endswith(pattern[1:])) for pattern in patterns)


class SameSiteOnly:
    """ASGI middleware (the outermost): a request must name one of the studio's host names (``Host``; else 400),
    and one sent by a web page must come from the studio's own pages (``Origin``; else 403).

    With sign-in off, anybody's browser that reaches the studio is an editor: without the Host check a web page
    could rebind its own DNS name to 127.0.0.1 and drive the editor API from a visitor's browser, and Gradio's CORS
    (mounted apps keep it) lets any origin read answers with credentials when the host is not a loopback name. A
    page of the studio sends its own origin; clients that are not browsers (gradio_client, curl) send none.
    ``/health`` answers any host: load balancers and probes call it by an address of their own."""

    def __init__(self, app, names: list[str]):
        self.app, self.names = app, names
        self.origins = [name for name in names if name != "*"]  # "*" opens the host check, never the origin one

    def _refusal(self, headers: Headers) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if not _listed(_host_name(host), self.names):
            return 400, (f"This studio does not answer to the host name '{host}': open it under one of "
                         f"{', '.join(self.names)}, or add the name to STUDIO_ALLOWED_HOSTS.")
        origin = headers.get("origin")
        if origin is None:
            return None
        sent_from = urllib.parse.urlsplit(origin).netloc.lower()  # "" for "null" (sandboxed frames, files)
        if sent_from != host.lower() and not _listed(_host_name(sent_from), self.origins):
            return 403, f"Requests sent from another site's page ({origin}) are refused: use the studio's own page."
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or scope["path"] == "/health":
            return await self.app(scope, receive, send)
        refusal = self._refusal(Headers(scope=scope))
        if refusal is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        await JSONResponse({"error": refusal[1]}, status_code=refusal[0])(scope, receive, send)


class SessionCookie:
    """Starlette's session middleware, its cookie ``Secure`` whenever the request came over HTTPS (the scheme
    uvicorn gives it, from a trusted proxy's X-Forwarded-Proto too) or ``always_secure`` (an https public URL,
    a Space): a cookie set over https must never travel over plain http after it."""

    def __init__(self, app, always_secure: bool = False, **options):
        from starlette.middleware.sessions import SessionMiddleware

        self.plain = SessionMiddleware(app, https_only=always_secure, **options)
        self.secure = SessionMiddleware(app, https_only=True, **options)

    async def __call__(self, scope, receive, send):
        https = scope.get("scheme") in ("https", "wss")
        await (self.secure if https else self.plain)(scope, receive, send)


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
    home = RATE + "/" if role == Role.RATER else "/"
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return home
    if role == Role.RATER and not _under(urllib.parse.urlparse(target).path, RATE):
        return home
    return target


def _from_this_site(request: Request, public_url: str = "") -> bool:
    """Whether a sign-in post came from the studio's own page. Another site's page could otherwise sign a visitor
    in under the attacker's account (login CSRF), and whatever they then upload or rate lands there. Browsers send
    Origin (or at least Referer) with a form post; a script such as gradio_client sends neither, and no cookie."""
    sent = request.headers.get("origin") or request.headers.get("referer")
    if sent is None:
        return "cookie" not in request.headers
    own = {request.headers.get("host", "").lower()}
    if public_url:
        own.add(urllib.parse.urlsplit(public_url).netloc.lower())
    netloc = urllib.parse.urlsplit(sent).netloc.lower()  # "" for Origin: null (a sandboxed or private context)
    return bool(netloc) and netloc in own


def _in_words(seconds: float) -> str:
    return f"{math.ceil(seconds)} s" if seconds < 90 else f"{math.ceil(seconds / 60)} min"


def add_sign_in_routes(app, access: Access, public_url: str = "") -> None:
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

        def refuse(message: str, status: int, headers: dict | None = None):
            response = page(_safe_next(str(form.get("next", ""))), message, status) if browser else \
                JSONResponse({"error": message}, status_code=status)
            response.headers.update(headers or {})
            return response

        if not _from_this_site(request, public_url):
            return refuse("This sign-in was sent from another site's page: sign in on the studio's own page.", 403)
        # the client's address: the peer's, or a configured proxy's X-Forwarded-For (uvicorn, see serve)
        address = request.client.host if request.client else ""
        known = name in access.known_names(request.session)
        wait = access.throttle.admit(name, address, known)  # counted before the slow check: parallel guesses see it
        if wait:
            return refuse(f"Too many failed sign-ins: try again in {_in_words(wait)}.", 429,
                          {"Retry-After": str(math.ceil(wait))})
        user = await asyncio.to_thread(access.users.check, name, password)  # scrypt: keep the event loop free
        if user is None:
            return refuse("Wrong user name or password.", 401)
        access.throttle.succeeded(name, address)
        await asyncio.to_thread(access.end_session, request.session)  # a session this browser had before
        access.start_session(request.session, user)
        target = _safe_next(str(form.get("next", "")), user.role)
        # gradio_client signs in with this same form and counts only a 2xx answer as success.
        return RedirectResponse(target, status_code=303) if browser else \
            JSONResponse({"success": True, "user": user.name, "role": user.role})

    def sign_out(request: Request):  # plain def: FastAPI runs it in its thread pool, away from the event loop
        access.end_session(request.session)  # also every copy of the cookie
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

    from studio.ui.app import build_app, build_rater_app
    from studio.ui.uploads import keep_files_in

    settings = store.settings
    access = access or Access.from_settings(settings, store)
    server = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    add_operations_routes(server, store)
    add_sign_in_routes(server, access, settings.public_url)
    # added first = innermost: the gate reads the session that the session middleware (added below) puts in scope
    server.add_middleware(AccessGate, access=access, metrics_token=settings.metrics_token)
    if access.oauth:
        from gradio.oauth import attach_oauth

        attach_oauth(server)  # /login/huggingface, /login/callback and the (https, iframe-friendly) session
    else:
        server.add_middleware(SessionCookie, secret_key=session_secret(store), session_cookie="studio_session",
                              same_site="none" if settings.on_spaces else "lax", max_age=SESSION_SECONDS,
                              always_secure=settings.on_spaces or settings.public_url.startswith("https://"))

    def signed_in(request) -> str | None:
        who = access.role_of(request.session)
        return who[0] if who else None

    def editor(request) -> str | None:
        who = access.role_of(request.session)
        return who[0] if who and who[1] == Role.EDITOR else None

    common = dict(max_file_size=f"{settings.max_upload_mb}mb", blocked_paths=private_files(store),
                  theme=gr.themes.Soft(), ssr_mode=False, show_error=True)
    refuse_rater_uploads(server)
    rater_app = build_rater_app(store)
    # Raters see media only through the blind copies (names that do not give the variant away), never samples/.
    blind = store.home / "blind"
    gr.mount_gradio_app(server, rater_app, RATE, auth_dependency=signed_in if access.enabled else None,
                        allowed_paths=[str(blind)], **common)
    # ...and the blind folder is the rating app's own Gradio folder: it serves the copies from there as they are,
    # and nothing from the folder the editors' uploads arrive in.
    keep_files_in(rater_app, _mounted(server, RATE), blind)
    studio_app = build_app(store)
    keep = settings.upload_keep_hours * 3600
    studio_app.delete_cache = (min(keep, 3600), keep)  # Gradio's own sweep (every hour at most), also at shutdown
    gr.mount_gradio_app(server, studio_app, "/", auth_dependency=editor if access.enabled else None,
                        allowed_paths=[str(store.home)], **common)
    server.add_middleware(SameSiteOnly, names=settings.host_names)  # added last = outermost: before anything else
    return server


# The rating app's Gradio routes that take files or write them: raters upload nothing.
RATER_REFUSED = ("/gradio_api/upload", "/gradio_api/process_recording", "/gradio_api/deep_link")


def refuse_rater_uploads(server) -> None:
    """Routes of the server itself, matched before the mounted rating app, refusing its file-taking routes."""
    def refused():
        return JSONResponse({"error": "The rating page takes no files."}, status_code=403)

    for path in RATER_REFUSED:
        for variant in (path, path + "/"):
            server.add_api_route(RATE + variant, refused, methods=["GET", "POST"], include_in_schema=False)


def _mounted(server, path: str):
    """The ASGI app mounted at ``path`` (``gr.mount_gradio_app`` returns the outer server, not Gradio's app)."""
    from starlette.routing import Mount

    return next(route.app for route in server.routes if isinstance(route, Mount) and route.path == path)


def start_dispatcher(store: Store, every: float = 2.0) -> None:
    """Queued runs and background tasks start by themselves, bake-offs move on, and runs, tasks, sample sets or
    deployments whose process died are marked so: a daemon thread does that every few seconds while the studio runs
    (after bringing back the deployments that served before the studio restarted)."""
    import logging
    import time

    from studio.generation.service import reap_sets
    from studio.serving.retention import housekeeping
    from studio.serving.service import recover_deployments
    from studio.tasks.bakeoff import advance as advance_bakeoffs
    from studio.tasks.service import dispatch as dispatch_tasks
    from studio.training.jobs import dispatch as dispatch_runs

    def loop() -> None:
        try:
            recover_deployments(store)  # the deployments that served before the restart serve again
        except Exception:  # noqa: BLE001 - logged; the studio itself must start
            logging.getLogger("studio").exception("recovering the deployments failed")
        while True:
            # reap_sets: a dead process's sets stop "running"; housekeeping: the same for deployments, and retention
            # advance_bakeoffs before dispatch_tasks: a bake-off whose runs ended starts sampling in the same round
            for step in (dispatch_runs, advance_bakeoffs, dispatch_tasks, reap_sets, housekeeping):
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

    from studio.models.common import quiet_import_noise
    from studio.processes import announcing_server
    from studio.store import open_store

    quiet_import_noise()  # generation imports transformers (and with it torchao) in this process: no kernel warnings
    store = open_store(settings)
    access = Access.from_settings(settings, store)  # a broken users file stops the start here, with its reason
    app = build_server(store, access)
    start_dispatcher(store)  # after the build: its first round (and any run it starts) would only slow the build
    # X-Forwarded-For/-Proto only from the configured proxies: by default uvicorn believes whatever a client
    # connecting from 127.0.0.1 claims, so a claimed address would escape the sign-in throttle
    proxies = settings.trusted_proxies.strip()
    sign_in = "on" if access.enabled else "off (set STUDIO_USERS to turn it on)"
    server = announcing_server(
        uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                       proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None,
                       timeout_graceful_shutdown=5),  # open event streams must not hold a restart
        lambda port: print(f"Gen Studio at http://{settings.host}:{port} (STUDIO_HOME {store.home}; sign-in {sign_in})",
                           flush=True))
    if block:
        server.run()
        return server
    threading.Thread(target=server.run, name="web", daemon=True).start()
    return server
