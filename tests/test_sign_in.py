"""Sign-in and roles: hashed passwords in a users file, editors and raters, Hugging Face accounts on a Space, and
the web server's two locks (a rater reaches the rating page and nothing else, through the UI or the API; nobody
who is not signed in reaches anything but the sign-in form and /health)."""

from __future__ import annotations

import os
import re
import time

import httpx
import pytest

from conftest import StudioProcess
from studio.auth import (Access, AuthError, LoginThrottle, Users, hash_password, parse_users, verify_password,
                         write_private, write_user)
from test_text_backend import rows, tiny_folder  # noqa: F401 - module-scoped fixtures
from test_web_evaluate import home_with_set  # noqa: F401 - a fixture
from test_web_generate import home_with_run  # noqa: F401 - a fixture

PASSWORDS = {"eda": "editor-pass-1", "rita": "rater-pass-1"}


def test_a_password_is_stored_as_a_salted_scrypt_hash_and_checks_back():
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    assert stored != hash_password("correct horse")  # salted
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert not verify_password("correct horse", "plain-text")
    with pytest.raises(AuthError, match="at least 8"):
        hash_password("short")


def test_a_users_file_with_a_bad_line_names_the_line_and_why(tmp_path):
    good = f"eda:editor:{hash_password('editor-pass-1')}"
    with pytest.raises(AuthError, match=r"entry 2 \(bob\): the role must be editor or rater, not 'admin'"):
        parse_users(f"{good}\nbob:admin:{hash_password('whatever-1')}")
    with pytest.raises(AuthError, match="never the password itself"):
        parse_users("carl:rater:hunter22")
    with pytest.raises(AuthError, match="does not exist"):
        Users(str(tmp_path / "missing.txt"))
    assert set(parse_users(f"# team\n{good}, rita:rater:{hash_password('rater-pass-1')}")) == {"eda", "rita"}


def test_users_file_changes_apply_without_a_restart(tmp_path):
    path = tmp_path / "users.txt"
    write_user(path, "eda", "editor", "editor-pass-1")
    write_user(path, "rita", "rater", "rater-pass-1")
    users = Users(str(path))
    assert users.check("eda", "editor-pass-1").role == "editor"
    assert users.check("eda", "rater-pass-1") is None and users.check("nobody", "editor-pass-1") is None
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    write_user(path, "rita", "editor", "new-pass-123")  # replaces rita's line, keeps eda's
    assert users.get("rita").role == "editor" and users.check("rita", "new-pass-123")
    assert users.check("eda", "editor-pass-1")
    assert path.read_text().count("rita:") == 1


def test_two_writes_within_one_timestamp_tick_are_both_seen(tmp_path):
    path = tmp_path / "users.txt"
    write_user(path, "eda", "editor", "editor-pass-1")
    write_user(path, "rita", "rater", "rater-pass-1")
    users = Users(str(path))
    assert users.get("eda").role == "editor"
    before = path.stat()
    # The roles swapped: a file of the same size, given the same modification time (a second write in one tick).
    write_private(path, path.read_text().replace("eda:editor:", "eda:rater:").replace("rita:rater:", "rita:editor:"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert (users.get("eda").role, users.get("rita").role) == ("rater", "editor")


def test_hugging_face_accounts_get_their_role_from_the_editor_list(monkeypatch):
    monkeypatch.setenv("SPACE_AUTHOR_NAME", "owner")
    access = Access(Users(""), oauth=True)
    future = time.time() + 3600

    def session(name, expires=future):
        return {"oauth_info": {"userinfo": {"preferred_username": name}, "expires_at": expires}}

    assert access.enabled
    assert access.role_of(session("owner")) == ("owner", "editor")  # default: the Space's owner edits
    assert access.role_of(session("visitor")) == ("visitor", "rater")
    assert access.role_of(session("owner", expires=time.time() - 1)) is None  # an expired sign-in is none
    assert access.role_of({}) is None
    everyone = Access(Users(""), oauth=True, oauth_editors="*")
    assert everyone.role_of(session("visitor")) == ("visitor", "editor")


def test_sign_in_is_off_without_users_and_on_with_an_empty_users_file(tmp_path):
    assert not Access(Users("")).enabled
    empty = tmp_path / "users.txt"
    empty.write_text("# nobody yet\n")
    assert Access(Users(str(empty))).enabled  # an empty list lets nobody in, rather than everybody


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_stranger_guessing_a_name_from_many_addresses_never_locks_its_owner_out():
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    for second in range(2 * 3600):  # two hours of guessing from ever new addresses, whenever a guess is let in
        clock.now += 1
        throttle.admit("eda", f"203.0.113.{second % 250}")
    wait = throttle.admit("eda", "198.51.100.7")
    assert 0 < wait <= throttle.longest_delay  # a back-off, never a lock
    clock.now += wait
    assert throttle.admit("eda", "198.51.100.7") == 0
    throttle.succeeded("eda", "198.51.100.7")
    # a browser that signed in as eda before skips the back-off, even right after a stranger's failure
    for _ in range(throttle.free_per_name + 1):
        throttle.admit("eda", "203.0.113.9")
    assert throttle.admit("eda", "198.51.100.7") > 0
    assert throttle.admit("eda", "198.51.100.7", known_browser=True) == 0
    # one address guessing many names is stopped for the window
    for number in range(throttle.per_address):
        assert throttle.admit(f"name{number}", "192.0.2.1") == 0
    assert throttle.admit("someone-else", "192.0.2.1") > 60
    assert throttle.admit("someone-else", "192.0.2.2") == 0


def test_the_failed_sign_in_table_stays_bounded_and_forgets_old_failures():
    clock = FakeClock()
    throttle = LoginThrottle(max_keys=100, clock=clock)
    for number in range(1000):  # ever new names from ever new addresses
        assert throttle.admit(f"name{number}", f"10.0.{number // 250}.{number % 250}") == 0
    assert len(throttle.names) == len(throttle.addresses) == 100
    clock.now += throttle.window
    throttle.admit("late", "10.9.9.9")
    assert len(throttle.names) == len(throttle.addresses) == 1


def test_signing_out_ends_the_session_for_every_web_process_and_after_a_restart(home, users_file):
    from studio.settings import load_settings
    from studio.store import open_store

    first, second = open_store(load_settings(home=home)), open_store(load_settings(home=home))
    try:
        here, elsewhere = Access(Users(str(users_file)), store=first), Access(Users(str(users_file)), store=second)
        session: dict = {}
        here.start_session(session, here.users.get("eda"))
        copy = dict(session)
        assert here.role_of(copy) == elsewhere.role_of(copy) == ("eda", "editor")
        here.end_session(session)
        assert here.role_of(copy) is None
        time.sleep(elsewhere.ended.refresh)  # another process reads the ended sessions again after this
        assert elsewhere.role_of(copy) is None
        assert Access(Users(str(users_file)), store=second).role_of(copy) is None  # (a restarted process)
    finally:
        first.close()
        second.close()


def test_signing_out_of_a_hugging_face_sign_in_ends_copies_of_it_too():
    access = Access(Users(""), oauth=True, oauth_editors="owner")
    session = {"oauth_info": {"userinfo": {"preferred_username": "owner"}, "access_token": "hf_oauth_token_1",
                              "expires_at": time.time() + 3600}}
    copy = {**session}
    assert access.role_of(copy) == ("owner", "editor")
    access.end_session(session)
    assert access.role_of(copy) is None
    assert access.role_of({"oauth_info": {**copy["oauth_info"], "access_token": "another"}}) == ("owner", "editor")


# ----------------------------------------------------------------------------- the running server


@pytest.fixture
def users_file(tmp_path):
    path = tmp_path / "users.txt"
    for name, role in (("eda", "editor"), ("rita", "rater")):
        write_user(path, name, role, PASSWORDS[name])
    return path


@pytest.fixture
def signed_in_studio(tmp_path, web_home, users_file):
    studio = StudioProcess(tmp_path / "studio.log", web_home, STUDIO_USERS=str(users_file),
                           STUDIO_METRICS_TOKEN="monitoring-token-1")
    yield studio.wait_until_up()
    studio.stop()


def signed_in(url: str, name: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30)
    answer = client.post("/login", data={"username": name, "password": PASSWORDS[name]})
    assert answer.status_code == 200, answer.text
    return client


def fn_index(config: dict, api_name: str) -> int:
    [index] = [d["id"] for d in config["dependencies"] if d.get("api_name") == api_name]
    return index


def join(client: httpx.Client, prefix: str, index: int, data: list) -> httpx.Response:
    return client.post(f"{prefix}/gradio_api/queue/join",
                       json={"fn_index": index, "data": data, "session_hash": "test", "event_data": None})


@pytest.mark.slow
def test_nobody_reaches_the_studio_without_signing_in(signed_in_studio):
    anonymous = httpx.Client(base_url=signed_in_studio, timeout=30)
    page = anonymous.get("/", headers={"accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")
    assert "Sign in" in anonymous.get("/login").text
    for path in ("/config", "/gradio_api/info", "/rate/config", "/metrics", "/status"):
        assert anonymous.get(path).status_code == 401, path
    assert join(anonymous, "", 0, []).status_code == 401
    assert anonymous.get("/health").json()["status"] == "ok"  # health checks need no account
    # a monitoring system reads /metrics with its token, and nothing else with it
    monitor = {"authorization": "Bearer monitoring-token-1"}
    assert "studio_runs" in anonymous.get("/metrics", headers=monitor).text
    assert anonymous.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert anonymous.get("/config", headers=monitor).status_code == 401
    wrong = anonymous.post("/login", data={"username": "eda", "password": "not-it-at-all"})
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text


@pytest.mark.slow
def test_a_rater_reaches_the_rating_page_only(signed_in_studio, web_home):
    from studio.settings import load_settings
    from studio.store import open_store
    from studio.ui.app import build_app

    rater, editor = signed_in(signed_in_studio, "rita"), signed_in(signed_in_studio, "eda")
    studio_config = editor.get("/config").json()
    delete_run = fn_index(studio_config, "on_delete")  # the Train tab's "delete this run" (exists: see below)
    assert rater.get("/config").status_code == 403
    assert rater.get("/gradio_api/info").status_code == 403
    assert "raters can use the rating page" in join(rater, "", delete_run, [1]).json()["error"]
    page = rater.get("/", headers={"accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/rate/"
    assert rater.get("/rate/config").status_code == 200
    # The rating page's own API has nothing but rating in it.
    endpoints = set(rater.get("/rate/gradio_api/info").json()["named_endpoints"])
    assert {"/rating_next_pair", "/rating_vote"} <= endpoints
    assert not {e for e in endpoints if any(word in e for word in ("delete", "train", "resume", "export", "stop", "import"))}
    # Neither role may download the database through the file route.
    database = web_home / "studio.db"
    assert database.exists()
    for client, prefix in ((rater, "/rate"), (editor, "")):
        assert client.get(f"{prefix}/gradio_api/file={database}").status_code in (403, 404)
    store = open_store(load_settings(home=web_home))
    assert build_app(store) is not None  # (the studio app itself still builds with its delete button)
    store.close()


@pytest.mark.slow
def test_gradio_client_signs_in_and_a_rater_can_use_only_the_rating_api(signed_in_studio):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    rater = Client(signed_in_studio + "/rate/", auth=("rita", PASSWORDS["rita"]), verbose=False)
    with pytest.raises(AppError, match="no sample set 999"):
        rater.predict(999, "rita", api_name="/rating_next_pair")  # reached the service: the set is unknown
    # The studio itself: the sign-in succeeds (no AuthenticationError, a ValueError's subclass) but its
    # configuration is refused, which gradio_client reports as a plain ValueError.
    with pytest.raises(ValueError, match="Could not fetch config for " + re.escape(signed_in_studio)) as refused:
        Client(signed_in_studio, auth=("rita", PASSWORDS["rita"]), verbose=False)
    assert type(refused.value) is ValueError
    answer = signed_in(signed_in_studio, "rita").get("/config")  # what the client was told
    assert answer.status_code == 403
    assert answer.json() == {"error": "rita is a rater: raters can use the rating page /rate/ only"}
    editor = Client(signed_in_studio, auth=("eda", PASSWORDS["eda"]), verbose=False)
    assert "/generate" in editor.view_api(print_info=False, return_format="dict")["named_endpoints"]


@pytest.mark.slow
def test_votes_go_under_the_signed_in_name_whatever_the_call_says(home_with_set, tmp_path, web_home, users_file):
    from gradio_client import Client

    studio = StudioProcess(tmp_path / "studio.log", web_home, STUDIO_USERS=str(users_file))
    try:
        client = Client(studio.wait_until_up() + "/rate/", auth=("rita", PASSWORDS["rita"]), verbose=False)
        pair = client.predict(home_with_set["set_id"], "someone-else", api_name="/rating_next_pair")
        vote = client.predict(home_with_set["set_id"], "someone-else", pair["pair_id"], "a", "",
                              api_name="/rating_vote")
        assert vote["status"] == "recorded"
    finally:
        studio.stop()
    from sqlalchemy import select

    from studio.settings import load_settings
    from studio.store import open_store
    from studio.store.tables import RatingVote

    store = open_store(load_settings(home=web_home))
    with store.session() as session:
        assert session.scalars(select(RatingVote.rater)).all() == ["rita"]
    store.close()


@pytest.mark.browser
@pytest.mark.slow
def test_a_rater_signs_in_in_a_browser_and_lands_on_the_rating_page(signed_in_studio, browser_page):
    page = browser_page
    page.goto(signed_in_studio + "/")
    page.locator("#username").fill("rita")
    page.locator("#password").fill("wrong-password")
    page.locator("#sign-in").click()
    assert "Wrong user name or password" in page.locator("#sign-in-error").inner_text()
    page.locator("#username").fill("rita")
    page.locator("#password").fill(PASSWORDS["rita"])
    page.locator("#sign-in").click()
    page.wait_for_url("**/rate/**", timeout=30_000)
    page.get_by_text("Signed in as").wait_for(timeout=30_000)
    assert "rita" in page.locator("#account").inner_text()
    assert page.locator("#rate-name input, #rate-name textarea").first.input_value() == "rita"
    page.goto(signed_in_studio + "/")  # the studio itself sends a rater back to the rating page
    page.wait_for_url("**/rate/**", timeout=30_000)
    assert page.get_by_role("tab", name="Train").count() == 0


@pytest.fixture
def text_set(web_home) -> int:
    """A sample set of one pair (two variants, one prompt) in the studio's home, made before the studio starts."""
    from studio.settings import load_settings
    from studio.store import open_store
    from test_evaluation import make_set

    store = open_store(load_settings(home=web_home))
    set_id = make_set(store, variants=("base", "7:2"), prompts=1)
    store.close()
    return set_id


@pytest.mark.slow
@pytest.mark.browser
def test_a_vote_cast_in_the_browser_goes_under_the_signed_in_name(text_set, signed_in_studio, browser_page, web_home):
    from sqlalchemy import select

    from studio.settings import load_settings
    from studio.store import open_store
    from studio.store.tables import RatingVote

    page = browser_page
    page.goto(signed_in_studio + "/rate/")
    page.locator("#username").fill("rita")
    page.locator("#password").fill(PASSWORDS["rita"])
    page.locator("#sign-in").click()
    name_box = page.locator("#rate-name input, #rate-name textarea").first
    page.wait_for_function("document.querySelector('#rate-name textarea, #rate-name input')?.value === 'rita'",
                           timeout=30_000)
    assert name_box.is_disabled()  # the page offers no other name...
    # ...and one edited in the page's code (as anyone can) is sent along, but not believed
    name_box.evaluate("box => { box.disabled = false; box.value = 'mallory';"
                      " box.dispatchEvent(new Event('input', {bubbles: true})); }")
    page.locator("#rate-set input").click()
    page.locator("li[data-testid=dropdown-option]").filter(has_text=f"#{text_set}").first.click()
    page.locator("#rate-start").click()
    page.get_by_text("item 1 of 1").wait_for(timeout=30_000)
    with page.expect_request(lambda r: "/queue/join" in r.url and r.method == "POST") as sent:
        page.locator("#vote-a").click()
    assert '"mallory"' in sent.value.post_data  # the vote's request named someone else
    result = page.locator("#rate-result")
    page.wait_for_function("/ was |Could not do it/.test(document.querySelector('#rate-result')?.innerText || '')",
                           timeout=30_000)  # recorded (the variants revealed) or refused
    assert " was " in result.inner_text(), result.inner_text()
    store = open_store(load_settings(home=web_home))
    try:
        with store.session() as session:
            assert session.scalars(select(RatingVote.rater)).all() == ["rita"]
    finally:
        store.close()


def test_studio_users_commands_write_a_file_the_server_reads(tmp_path, monkeypatch, capsys):
    import io
    import json

    from studio.cli import main

    path = tmp_path / "team" / "users.txt"
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert main(["users", "add", "ana", "--role", "rater", "--file", str(path), "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["users", "add", "ben", "--role", "editor", "--file", str(path), "--password-stdin"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["users", "list", "--file", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"users": [{"name": "ana", "role": "rater"}]}
    assert Users(str(path)).check("ana", "a-long-password").role == "rater"
    assert main(["users", "remove", "ana", "--file", str(path)]) == 0
    assert Users(str(path)).get("ana") is None
    monkeypatch.delenv("STUDIO_USERS", raising=False)
    assert main(["users", "list"]) == 2
    assert "name the users file with --file" in capsys.readouterr().err


@pytest.mark.browser
@pytest.mark.slow
def test_an_import_in_the_browser_records_the_signed_in_editor(signed_in_studio, browser_page, web_home, tmp_path):
    from studio.settings import load_settings
    from studio.store import list_actions, open_store

    corpus = tmp_path / "tales.txt"
    corpus.write_text("\n\n".join(f"The {a} fox met the {b} hen." for a in ("red", "old", "quick")
                                  for b in ("white", "brown", "tiny")))
    page = browser_page
    page.goto(signed_in_studio + "/")
    page.locator("#username").fill("eda")
    page.locator("#password").fill(PASSWORDS["eda"])
    page.locator("#sign-in").click()
    page.get_by_text("Signed in as").wait_for(timeout=30_000)
    page.locator("#data-upload input[type=file]").set_input_files([str(corpus)])
    page.wait_for_function("document.querySelector('#data-modality input[value=text]')?.checked === true",
                           timeout=30_000)
    page.locator("#data-import").click()
    page.locator("#data-summary").get_by_text("items kept").wait_for(timeout=60_000)
    store = open_store(load_settings(home=web_home))
    try:
        [action] = [a for a in list_actions(store) if a["action"] == "dataset.import"]
        assert action["actor"] == "eda"
    finally:
        store.close()


@pytest.mark.slow
def test_raters_get_media_only_through_the_blind_copies(tmp_path, web_home, users_file):
    from PIL import Image

    other_tmp = tmp_path / "process-tmp"  # so the home is not under the process's temp folder, as in Docker
    other_tmp.mkdir()
    studio = StudioProcess(tmp_path / "studio.log", web_home, STUDIO_USERS=str(users_file), TMPDIR=str(other_tmp))
    try:
        url = studio.wait_until_up()
        blind, named = web_home / "blind" / "1" / "3f9a.png", web_home / "samples" / "1" / "run-2-step-4" / "0.png"
        for path in (blind, named):
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), "red").save(path)
        (web_home / "blind" / "key").write_bytes(b"k" * 32)
        rater, editor = signed_in(url, "rita"), signed_in(url, "eda")
        assert rater.get(f"/rate/gradio_api/file={blind}").status_code == 200
        assert rater.get(f"/rate/gradio_api/file={named}").status_code == 403  # would name the variant
        assert rater.get(f"/rate/gradio_api/file={web_home / 'blind' / 'key'}").status_code == 403
        assert editor.get(f"/gradio_api/file={named}").status_code == 200
    finally:
        studio.stop()


# ----------------------------------------------------------------------------- hardening of the sign-in itself


def sign_in_post(url: str, name: str, password: str, **headers) -> httpx.Response:
    """One sign-in as a script sends it: a fresh connection with no cookie (as gradio_client does)."""
    return httpx.post(f"{url}/login", data={"username": name, "password": password}, headers=headers, timeout=60)


def owner_gets_in_after_the_back_off(url: str, **headers) -> httpx.Response:
    """eda's own sign-in, retried as its answer says: refused at most once, for at most a few seconds."""
    answer = sign_in_post(url, "eda", PASSWORDS["eda"], **headers)
    if answer.status_code == 429:
        wait = float(answer.headers.get("retry-after", "inf"))  # (none: a lock, not a back-off)
        assert wait <= 5, answer.text
        time.sleep(wait)
        answer = sign_in_post(url, "eda", PASSWORDS["eda"], **headers)
    return answer


@pytest.mark.slow
def test_a_stranger_sharing_the_owners_address_does_not_lock_the_owner_out(signed_in_studio):
    free = LoginThrottle().free_per_name
    answers = [sign_in_post(signed_in_studio, "eda", "wrong-password").status_code for _ in range(free + 1)]
    assert answers == [401] * free + [429]
    # The stranger shares the owner's address here (one proxy, one NAT): eda still gets in after the back-off.
    assert owner_gets_in_after_the_back_off(signed_in_studio).status_code == 200


@pytest.mark.slow
def test_parallel_wrong_passwords_are_counted_before_they_are_checked(signed_in_studio):
    from concurrent.futures import ThreadPoolExecutor

    def guess(number: int) -> int:  # a different name each time: only the per-address count applies
        return sign_in_post(signed_in_studio, f"name{number}", "wrong-password").status_code

    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(guess, range(30)))
    per_address = LoginThrottle().per_address
    assert answers.count(401) == per_address and answers.count(429) == 30 - per_address, answers


@pytest.fixture(scope="module")
def studio_on_a_test_clock(tmp_path_factory):
    """A signed-in studio served in this process, its sign-in throttle on a clock the test moves (no test waits
    fifteen minutes), believing X-Forwarded-For from 127.0.0.1 so that each attempt can come from its own
    address. ``fresh_throttle()`` gives each test an empty throttle and its clock."""
    from types import SimpleNamespace

    from conftest import ServedHere
    from studio.settings import load_settings
    from studio.store import open_store
    from studio.ui.server import build_server

    root = tmp_path_factory.mktemp("clock")
    users = root / "users.txt"
    for name, role in (("eda", "editor"), ("rita", "rater")):
        write_user(users, name, role, PASSWORDS[name])
    store = open_store(load_settings(home=root / "home"))
    access = Access(Users(str(users)), store=store)
    served = ServedHere(build_server(store, access), proxy_headers=True, forwarded_allow_ips="127.0.0.1")

    def fresh_throttle() -> FakeClock:
        clock = FakeClock()
        access.throttle = LoginThrottle(clock=clock)
        return clock

    yield SimpleNamespace(url=served.url, fresh_throttle=fresh_throttle)
    served.stop()
    store.close()


def test_after_five_wrong_passwords_a_name_waits_a_doubling_back_off_of_at_most_a_minute(studio_on_a_test_clock):
    url, clock = studio_on_a_test_clock.url, studio_on_a_test_clock.fresh_throttle()
    addresses = (f"198.51.100.{number}" for number in range(1, 250))  # a new one each try: no address limit

    def attempt(password: str = "wrong-password") -> httpx.Response:
        return sign_in_post(url, "eda", password, **{"x-forwarded-for": next(addresses)})

    assert [attempt().status_code for _ in range(5)] == [401] * 5
    waits = []
    for _ in range(9):
        refused = attempt()
        assert refused.status_code == 429 and "Too many failed sign-ins" in refused.json()["error"], refused.text
        waits.append(int(refused.headers["retry-after"]))
        clock.now += waits[-1] - 0.5
        assert attempt().status_code == 429  # not yet
        clock.now += 0.5
        assert attempt().status_code == 401  # let in at the end of the back-off (and counted)
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    refused = attempt(PASSWORDS["eda"])
    assert refused.status_code == 429  # the right password waits its turn too...
    clock.now += int(refused.headers["retry-after"])
    assert attempt(PASSWORDS["eda"]).status_code == 200  # ...and then gets in: a back-off, never a lock


def test_ten_failures_from_one_address_stop_it_for_fifteen_minutes(studio_on_a_test_clock):
    url, clock = studio_on_a_test_clock.url, studio_on_a_test_clock.fresh_throttle()

    def attempt(name: str, password: str, address: str) -> httpx.Response:
        return sign_in_post(url, name, password, **{"x-forwarded-for": address})

    for number in range(10):  # one wrong password for each of ten names: no name reaches its back-off
        assert attempt(f"name{number}", "wrong-password", "192.0.2.1").status_code == 401
    stopped = attempt("rita", PASSWORDS["rita"], "192.0.2.1")
    assert stopped.status_code == 429 and stopped.headers["retry-after"] == "900"
    assert "try again in 15 min" in stopped.json()["error"]
    assert attempt("rita", PASSWORDS["rita"], "192.0.2.2").status_code == 200  # only that address is stopped
    clock.now += 899
    assert attempt("rita", PASSWORDS["rita"], "192.0.2.1").headers.get("retry-after") == "1"
    clock.now += 1
    assert attempt("rita", PASSWORDS["rita"], "192.0.2.1").status_code == 200


@pytest.fixture
def studio_with(tmp_path, web_home, users_file):
    """Starts a signed-in studio with extra settings (``studio_with(STUDIO_TRUSTED_PROXIES="127.0.0.1")``)."""
    started = []

    def start(**env) -> str:
        started.append(StudioProcess(tmp_path / f"studio-{len(started)}.log", web_home,
                                     STUDIO_USERS=str(users_file), **env))
        return started[-1].wait_until_up()

    yield start
    for studio in started:
        studio.stop()


@pytest.mark.slow
def test_forwarded_headers_are_believed_only_from_a_configured_proxy(studio_with):
    per_address = LoginThrottle().per_address
    for proxies in ("", "127.0.0.1"):
        url = studio_with(STUDIO_TRUSTED_PROXIES=proxies)
        over_https = sign_in_post(url, "rita", PASSWORDS["rita"], **{"x-forwarded-proto": "https"})
        assert over_https.status_code == 200
        assert ("secure" in over_https.headers["set-cookie"].lower()) == bool(proxies), over_https.headers
        for number in range(per_address):  # wrong passwords for different names, each claiming its own address
            assert sign_in_post(url, f"name{number}", "wrong-password",
                                **{"x-forwarded-for": f"203.0.113.{number}"}).status_code == 401
        claimed = sign_in_post(url, "another", "wrong-password", **{"x-forwarded-for": "203.0.113.99"})
        # ignored: every attempt came from 127.0.0.1, which has had its share; believed: a new address
        assert claimed.status_code == (401 if proxies else 429), proxies
    plain = sign_in_post(url, "rita", PASSWORDS["rita"], **{"x-forwarded-for": "198.51.100.2"})
    assert "secure" not in plain.headers["set-cookie"].lower()  # plain http: the cookie must still work there
    public = studio_with(STUDIO_PUBLIC_URL="https://studio.example.org")
    assert "secure" in sign_in_post(public, "rita", PASSWORDS["rita"]).headers["set-cookie"].lower()


@pytest.mark.slow
def test_a_stranger_failing_for_a_name_does_not_keep_its_owner_out(studio_with):
    url = studio_with(STUDIO_TRUSTED_PROXIES="127.0.0.1")
    stranger, owner = {"x-forwarded-for": "203.0.113.50"}, {"x-forwarded-for": "198.51.100.7"}
    browser = httpx.Client(base_url=url, timeout=60, headers={**owner, "origin": url})
    assert browser.post("/login", data={"username": "eda", "password": PASSWORDS["eda"]}).status_code == 200
    browser.get("/logout")
    answers = [sign_in_post(url, "eda", "wrong-password", **stranger).status_code for _ in range(8)]
    assert answers == [401] * 5 + [429] * 3
    # the browser eda signed in with before gets in at once; anyone else's after the back-off
    assert browser.post("/login", data={"username": "eda", "password": PASSWORDS["eda"]}).status_code == 200
    for _ in range(5):
        sign_in_post(url, "eda", "wrong-password", **stranger)
    assert sign_in_post(url, "nobody", "wrong-password", **stranger).status_code == 429  # its address: stopped
    assert owner_gets_in_after_the_back_off(url, **owner).status_code == 200


@pytest.mark.slow
def test_signing_out_or_a_changed_password_or_role_ends_copies_of_a_session(signed_in_studio, users_file):
    def copy_of(client: httpx.Client) -> httpx.Client:
        return httpx.Client(base_url=signed_in_studio, timeout=30, cookies=dict(client.cookies))

    signed = signed_in(signed_in_studio, "eda")
    stolen = copy_of(signed)
    assert stolen.get("/config").status_code == 200
    signed.get("/logout")
    assert stolen.get("/config").status_code == 401
    assert signed.get("/config").status_code == 401

    before_change = copy_of(signed_in(signed_in_studio, "eda"))
    write_user(users_file, "eda", "editor", "a-new-password-1")
    assert before_change.get("/config").status_code == 401
    assert sign_in_post(signed_in_studio, "eda", "a-new-password-1").status_code == 200

    rater_before = copy_of(signed_in(signed_in_studio, "rita"))
    editor_before = httpx.Client(base_url=signed_in_studio, timeout=30)
    assert editor_before.post("/login", data={"username": "eda", "password": "a-new-password-1"}).status_code == 200
    lines = users_file.read_text().replace("eda:editor:", "eda:rater:").replace("rita:rater:", "rita:editor:")
    users_file.write_text(lines)
    assert editor_before.get("/config").status_code == 401  # not merely a rater now: signed out
    assert editor_before.get("/rate/config").status_code == 401
    assert rater_before.get("/rate/config").status_code == 401


@pytest.mark.slow
def test_a_sign_in_posted_from_another_site_is_refused(signed_in_studio):
    credentials = {"username": "eda", "password": PASSWORDS["eda"]}
    for headers in ({"origin": "https://elsewhere.example"}, {"referer": "https://elsewhere.example/page"},
                    {"origin": "null"}, {"cookie": "studio_session=anything"}):
        refused = httpx.post(f"{signed_in_studio}/login", data=credentials, headers=headers, timeout=30)
        assert refused.status_code == 403 and "another site" in refused.text, headers
        assert "set-cookie" not in refused.headers
    own_page = httpx.post(f"{signed_in_studio}/login", data=credentials, headers={"origin": signed_in_studio})
    assert own_page.status_code == 200
