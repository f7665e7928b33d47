"""Who may use the studio: sign-in with hashed passwords or Hugging Face OAuth, and two roles.

- Off by default: on a personal machine everyone who reaches the studio is an editor and nothing asks for a
  password.
- On when ``STUDIO_USERS`` names a users file (or holds the entries itself): one ``NAME:ROLE:HASH`` a line,
  ``ROLE`` being ``editor`` (everything) or ``rater`` (the rating page ``/rate`` and nothing else). ``studio users
  add`` writes the lines; the hash is scrypt (memory-hard, in Python's standard library), so the file never holds
  a password.
- On a Hugging Face Space whose metadata says ``hf_oauth: true`` (the Space then has ``OAUTH_CLIENT_ID``), people
  sign in with their Hugging Face account: the names in ``STUDIO_OAUTH_EDITORS`` (default: the Space's owner;
  ``*`` for everyone) are editors, every other signed-in account is a rater.

- A password session holds its own id, its start and the user's ``version`` (a digest of their line): signing
  out ends it everywhere (``ended_sessions`` in the store), and so do a new password, another role and a week.
- ``LoginThrottle`` counts failed sign-ins per address and (with a back-off, never a lock) per name.

This module knows nothing of the web server: ``studio.ui.server`` asks it who a request's session belongs to.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from studio.roles import ROLES, Role
from studio.store.engine import Store
from studio.store.sessions import end_session, ended_sessions

# A sign-in lasts a week at most (also when its cookie is copied): after that, sign in again.
SESSION_SECONDS = 7 * 24 * 3600
KNOWN_NAMES = 5  # names a browser is remembered to have signed in under (a shared computer)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")
# scrypt at N=2^14, r=8: ~16 MiB and ~50 ms a check, the parameters the scrypt paper recommends for logins.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class AuthError(ValueError):
    """A users file or entry that cannot be used; the message names the line and why."""


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$SALT$HASH`` (base64): what a users file stores instead of the password."""
    if len(password) < 8:
        raise AuthError("a password needs at least 8 characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    encode = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt)}${encode(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        found = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                               maxmem=2**26, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(found, expected)


# Checked against when the name is unknown, so a wrong name takes as long as a wrong password.
_DUMMY_HASH = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_hex(16))
    return _DUMMY_HASH


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password_hash: str = ""

    @property
    def version(self) -> str:
        """Changes whenever the user's line does (a new password, another role): a session started under an older
        version is over. (Sessions are signed, not encrypted: this digest of a salted hash tells nobody anything.)"""
        return hashlib.sha256(f"{self.name}:{self.role}:{self.password_hash}".encode()).hexdigest()[:16]


def parse_users(text: str, origin: str = "STUDIO_USERS") -> dict[str, User]:
    """``NAME:ROLE:HASH`` entries, one a line (or comma-separated); ``#`` starts a comment."""
    users: dict[str, User] = {}
    entries = [part.strip() for line in text.splitlines() for part in line.split("#", 1)[0].split(",")]
    for number, entry in enumerate(entries, 1):
        if not entry:
            continue
        name, _, rest = entry.partition(":")
        role, _, password_hash = rest.partition(":")
        if not NAME.match(name):
            raise AuthError(f"{origin}, entry {number}: '{name}' is not a valid user name (letters, digits, . _ - @)")
        if role not in ROLES:
            raise AuthError(f"{origin}, entry {number} ({name}): the role must be editor or rater, not '{role}'")
        if not password_hash.startswith("scrypt$"):
            raise AuthError(f"{origin}, entry {number} ({name}): the password must be a hash made by "
                            "`studio users add` or `studio users hash`, never the password itself")
        users[name] = User(name, role, password_hash)
    return users


def write_private(path: Path, text: str) -> None:
    """Writes ``text`` readable by its owner only (0600 from the first byte) and whole: a temporary file moved
    into place, so a crash never leaves a cut-off users file for the running studio to read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def write_user(path: Path, name: str, role: str, password: str) -> None:
    """Adds ``name`` to the users file (or replaces its line), keeping every other line as it was."""
    if not NAME.match(name):
        raise AuthError(f"'{name}' is not a valid user name (letters, digits, . _ - @)")
    if role not in ROLES:
        raise AuthError(f"the role must be editor or rater, not '{role}'")
    line = f"{name}:{role}:{hash_password(password)}"
    lines = path.read_text().splitlines() if path.exists() else ["# Gen Studio users: NAME:ROLE:SCRYPT-HASH"]
    kept = [existing for existing in lines if existing.split(":", 1)[0].strip() != name]
    write_private(path, "\n".join(kept + [line]) + "\n")


def remove_user(path: Path, name: str) -> bool:
    if not path.exists():
        return False
    lines = path.read_text().splitlines()
    kept = [existing for existing in lines if existing.split(":", 1)[0].strip() != name]
    write_private(path, "\n".join(kept) + "\n")
    return len(kept) < len(lines)


class Users:
    """The users of ``STUDIO_USERS``, read again when the file changes, so removing someone (or changing a role)
    takes effect on their next request without a restart."""

    def __init__(self, source: str):
        self.source = source.strip()
        self._lock = threading.Lock()
        self._content: bytes | None = None
        self._users: dict[str, User] = {}
        self.reload()

    @staticmethod
    def file_of(source: str) -> Path | None:
        """The users file ``STUDIO_USERS`` names, or None when it is empty or holds the entries themselves."""
        source = (source or "").strip()
        looks_inline = ":" in source and "$" in source  # NAME:ROLE:scrypt$... entries, not a path
        return None if not source or looks_inline else Path(source).expanduser()

    @property
    def path(self) -> Path | None:
        return self.file_of(self.source)

    def reload(self) -> None:
        with self._lock:
            if self.path is None:
                self._users = parse_users(self.source) if self.source else {}
                return
            if not self.path.exists():
                raise AuthError(f"STUDIO_USERS names {self.path}, which does not exist: create it with "
                                f"`studio users add NAME --role editor --file {self.path}`")
            # Compared by content, not modification time: two writes within one timestamp tick leave the time as
            # it was, and the second would never be read. The file is a few lines: reading it costs nothing.
            content = self.path.read_bytes()
            if content != self._content:
                self._users = parse_users(content.decode("utf-8"), origin=str(self.path))
                self._content = content

    def get(self, name: str | None) -> User | None:
        if not name:
            return None
        if self.path is not None:
            try:
                self.reload()
            except AuthError:
                return None  # a file that went missing or broke signs nobody in, rather than everybody
        return self._users.get(name)

    def check(self, name: str, password: str) -> User | None:
        """The user when ``password`` is theirs, else None (in about the same time either way)."""
        user = self.get(name)
        ok = verify_password(password, user.password_hash if user else _dummy_hash())
        return user if ok and user else None

    def all(self) -> list[User]:
        return list(self._users.values())

    def __len__(self) -> int:
        return len(self._users)


class _Failures:
    """Failure times per key (a name or an address), least recently failed first, at most ``max_keys`` keys and
    ``per_key`` times a key: an attacker sending ever new names or addresses cannot grow it without bound."""

    def __init__(self, window: float, max_keys: int, per_key: int):
        self.window, self.max_keys, self.per_key = window, max_keys, per_key
        self._times: OrderedDict[str, list[float]] = OrderedDict()

    def recent(self, key: str, now: float) -> list[float]:
        return [t for t in self._times.get(key, []) if now - t < self.window]

    def add(self, key: str, now: float) -> None:
        self._times[key] = (self.recent(key, now) + [now])[-self.per_key:]
        self._times.move_to_end(key)
        self._prune(now)

    def forget(self, key: str) -> None:
        self._times.pop(key, None)

    def forget_one(self, key: str) -> None:
        times = self._times.get(key)
        if times:
            times.pop()
        if not times:
            self._times.pop(key, None)

    def _prune(self, now: float) -> None:
        # the first key is the one that failed longest ago: once its newest failure is out of the window, so is
        # every failure it holds
        while self._times and now - next(iter(self._times.values()))[-1] >= self.window:
            self._times.popitem(last=False)
        while len(self._times) > self.max_keys:
            self._times.popitem(last=False)

    def __len__(self) -> int:
        return len(self._times)


class LoginThrottle:
    """Slows password guessing on a studio reachable from a network, without letting a stranger lock someone out.

    - Per address: ``per_address`` failed sign-ins in ``window`` seconds, then that address waits out the window.
    - Per name: ``free_per_name`` failures, then each further try waits a back-off after the last failure that
      doubles from one second up to ``longest_delay``: never a lock, so the owner of a name that strangers keep
      guessing still gets in, from their own address, after at most ``longest_delay``. A browser that signed in
      under the name before (``known_browser``, from its signed cookie) skips the back-off altogether: strangers
      racing for the next slot cannot keep the owner out either.

    ``admit`` checks and counts an attempt in one step, *before* the slow password check: parallel guesses each
    see the ones before them. A right password then takes its count back (``succeeded``).
    """

    def __init__(self, per_address: int = 10, free_per_name: int = 5, window: float = 900.0,
                 longest_delay: float = 60.0, max_keys: int = 10_000, clock=time.monotonic):
        self.per_address, self.free_per_name = per_address, free_per_name
        self.window, self.longest_delay, self.clock = window, longest_delay, clock
        self.addresses = _Failures(window, max_keys, per_key=per_address)
        self.names = _Failures(window, max_keys, per_key=free_per_name + 64)  # enough to reach the longest delay
        self._lock = threading.Lock()

    def admit(self, name: str, address: str, known_browser: bool = False) -> float:
        """0 when this attempt may check its password (it is counted as a failure already), else the seconds to
        wait before the next attempt is admitted."""
        with self._lock:
            now = self.clock()
            at_address = self.addresses.recent(address, now)
            if len(at_address) >= self.per_address:
                return self.window - (now - at_address[0])
            for_name = self.names.recent(name, now)
            if len(for_name) >= self.free_per_name and not known_browser:
                backoff = min(2.0 ** (len(for_name) - self.free_per_name), self.longest_delay)
                wait = backoff - (now - for_name[-1])
                if wait > 0:
                    return wait
            self.addresses.add(address, now)
            self.names.add(name, now)
            return 0.0

    def succeeded(self, name: str, address: str) -> None:
        """The password was right: the name's failures are forgotten and this attempt's count is taken back."""
        with self._lock:
            self.names.forget(name)
            self.addresses.forget_one(address)


class EndedSessions:
    """Sessions ended by signing out. With a store they are kept in the database, so every web process refuses
    them, also after a restart; each process reads them again at most every ``refresh`` seconds (another
    process's sign-out applies here within that, its own at once). Without a store (tests): in memory."""

    def __init__(self, store: Store | None = None, refresh: float = 1.0):
        self.store, self.refresh = store, refresh
        self._ids: set[str] = set()
        self._read_at = float("-inf")
        self._lock = threading.Lock()  # a re-read never drops an id that this process has just ended

    def add(self, session_id: str, until: float) -> None:
        with self._lock:
            if self.store is not None:
                end_session(self.store, session_id, until)
            self._ids.add(session_id)

    def __contains__(self, session_id: str) -> bool:
        if self.store is not None and time.monotonic() - self._read_at >= self.refresh:
            with self._lock:
                if time.monotonic() - self._read_at >= self.refresh:
                    self._ids = ended_sessions(self.store)
                    self._read_at = time.monotonic()
        return session_id in self._ids


class Access:
    """Whether sign-in is on and which role a signed-in name has: the one policy the web server applies."""

    def __init__(self, users: Users, oauth: bool = False, oauth_editors: str = "", store: Store | None = None):
        self.users = users
        self.oauth = oauth
        owner = os.environ.get("SPACE_AUTHOR_NAME", "")
        self.oauth_editors = {n.strip() for n in (oauth_editors or owner).split(",") if n.strip()}
        self.throttle = LoginThrottle()
        self.ended = EndedSessions(store)

    @classmethod
    def from_settings(cls, settings, store: Store | None = None) -> "Access":
        # A Space sets SYSTEM=spaces; its OAUTH_* variables appear when its metadata says hf_oauth: true.
        oauth = bool(os.environ.get("SYSTEM") == "spaces" and os.environ.get("OAUTH_CLIENT_ID"))
        return cls(Users(settings.users), oauth=oauth, oauth_editors=settings.oauth_editors, store=store)

    @property
    def enabled(self) -> bool:
        return self.oauth or len(self.users) > 0 or self.users.path is not None

    @staticmethod
    def known_names(session: dict) -> list[str]:
        """The names this browser has signed in under (kept in its signed cookie across signing out): their
        sign-ins skip the back-off that strangers' failures put on a name."""
        return list(session.get("known") or [])

    def start_session(self, session: dict, user: User) -> None:
        """Fills a fresh session for ``user``: its own id (so signing out can end it) and the user's version and
        the start time (so a new password or role, or the session's age, ends it too)."""
        known = [user.name] + [name for name in self.known_names(session) if name != user.name]
        session.clear()
        session["user"], session["sid"] = user.name, secrets.token_urlsafe(24)
        session["since"], session["version"] = time.time(), user.version
        session["known"] = known[:KNOWN_NAMES]

    def end_session(self, session: dict) -> None:
        """Signing out: this session, and every copy of its cookie, is refused from now on. The browser stays
        known (see ``known_names``)."""
        ending = self._id_and_end(session)
        if ending:
            self.ended.add(*ending)
        known = self.known_names(session)
        session.clear()
        if known:
            session["known"] = known

    @staticmethod
    def _id_and_end(session: dict) -> tuple[str, float] | None:
        """The id a session is ended by, and when it would end by itself. A Hugging Face sign-in (made by
        gradio.oauth, which gives it no id) goes by a digest of its access token, unique to that sign-in."""
        if session.get("sid"):
            return str(session["sid"]), float(session.get("since") or 0) + SESSION_SECONDS
        info = session.get("oauth_info") or {}
        if info.get("access_token"):
            digest = hashlib.sha256(str(info["access_token"]).encode()).hexdigest()[:40]
            return f"oauth:{digest}", float(info.get("expires_at") or time.time() + SESSION_SECONDS)
        return None

    def _current(self, session: dict, user: User) -> bool:
        """A password session is valid while the user's line is unchanged, it is younger than SESSION_SECONDS
        and nobody signed it out."""
        age = time.time() - float(session.get("since") or 0)
        return session.get("version") == user.version and 0 <= age < SESSION_SECONDS \
            and bool(session.get("sid")) and session["sid"] not in self.ended

    def role_of(self, session: dict) -> tuple[str, str] | None:
        """(name, role) of the person a session belongs to, or None when nobody is signed in."""
        name = session.get("user")
        if name:
            user = self.users.get(name)
            return (user.name, user.role) if user and self._current(session, user) else None
        if self.oauth:
            info = session.get("oauth_info") or {}
            if info.get("expires_at") and info["expires_at"] < time.time():
                return None
            ending = self._id_and_end(session)
            if ending and ending[0] in self.ended:
                return None
            name = (info.get("userinfo") or {}).get("preferred_username")
            if name:
                editor = "*" in self.oauth_editors or name in self.oauth_editors
                return name, Role.EDITOR if editor else Role.RATER
        return None
