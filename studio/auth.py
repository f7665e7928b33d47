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
from dataclasses import dataclass
from pathlib import Path

ROLES = ("editor", "rater")
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
        self._stamp: float | None = None
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
            stamp = self.path.stat().st_mtime
            if stamp != self._stamp:
                self._users = parse_users(self.path.read_text(), origin=str(self.path))
                self._stamp = stamp

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


class LoginThrottle:
    """At most ``attempts`` failed sign-ins per name and address in ``window`` seconds: slows password guessing
    on a studio reachable from a network without locking the real person out for long."""

    def __init__(self, attempts: int = 5, window: float = 300.0):
        self.attempts, self.window = attempts, window
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> list[float]:
        return [t for t in self._failures.get(key, []) if now - t < self.window]

    def wait_seconds(self, key: str) -> float:
        now = time.time()
        with self._lock:
            recent = self._recent(key, now)
            return 0.0 if len(recent) < self.attempts else self.window - (now - recent[0])

    def failed(self, key: str) -> None:
        now = time.time()
        with self._lock:
            self._failures[key] = self._recent(key, now) + [now]

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


class Access:
    """Whether sign-in is on and which role a signed-in name has: the one policy the web server applies."""

    def __init__(self, users: Users, oauth: bool = False, oauth_editors: str = ""):
        self.users = users
        self.oauth = oauth
        owner = os.environ.get("SPACE_AUTHOR_NAME", "")
        self.oauth_editors = {n.strip() for n in (oauth_editors or owner).split(",") if n.strip()}
        self.throttle = LoginThrottle()

    @classmethod
    def from_settings(cls, settings) -> "Access":
        # A Space sets SYSTEM=spaces; its OAUTH_* variables appear when its metadata says hf_oauth: true.
        oauth = bool(os.environ.get("SYSTEM") == "spaces" and os.environ.get("OAUTH_CLIENT_ID"))
        return cls(Users(settings.users), oauth=oauth, oauth_editors=settings.oauth_editors)

    @property
    def enabled(self) -> bool:
        return self.oauth or len(self.users) > 0 or self.users.path is not None

    def role_of(self, session: dict) -> tuple[str, str] | None:
        """(name, role) of the person a session belongs to, or None when nobody is signed in."""
        name = session.get("user")
        if name:
            user = self.users.get(name)
            return (user.name, user.role) if user else None
        if self.oauth:
            info = session.get("oauth_info") or {}
            if info.get("expires_at") and info["expires_at"] < time.time():
                return None
            name = (info.get("userinfo") or {}).get("preferred_username")
            if name:
                editor = "*" in self.oauth_editors or name in self.oauth_editors
                return name, "editor" if editor else "rater"
        return None
