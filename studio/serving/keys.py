"""API keys for the deployments: Bearer tokens made by editors, named, revocable, stored hashed.

A key is ``gs-`` and 32 random bytes (URL-safe); only its SHA-256 is stored, so it is shown once, when it is made.
A revoked key stays listed (who had it, until when) but opens nothing."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from studio.store import Store, record_action
from studio.store.tables import ApiKey, as_utc

PREFIX = "gs-"
SHOWN = 8  # characters of the key kept in clear (its prefix) so people recognise which one a client holds
USE_NOTED_EVERY = timedelta(minutes=1)  # "last used" to the minute: not a database write for every request
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class ApiKeyError(ValueError):
    """A key operation that cannot be done as asked (a duplicate or unknown name, a bad rate); says why."""


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME.fullmatch(name):
        raise ApiKeyError(f"'{name}' is not a key name: use 1 to 100 letters, digits, '.', '_' or '-', starting "
                          "with a letter or digit")
    return name


def add_key(store: Store, name: str, actor: str | None = None, rate_per_minute: int | None = None) -> str:
    """Makes the key ``name`` and returns it: the only time it is shown. ``rate_per_minute``: its own limit
    (None: each deployment's default)."""
    name = _check_name(name)
    if rate_per_minute is not None and int(rate_per_minute) < 1:
        raise ApiKeyError(f"a key's rate limit is at least 1 request per minute (got {rate_per_minute})")
    token = PREFIX + secrets.token_urlsafe(32)
    with store.session() as session:
        if session.scalar(select(ApiKey).where(ApiKey.name == name)) is not None:
            raise ApiKeyError(f"there is already a key named '{name}' (see `studio deploy keys list`); pick another "
                              "name, or revoke it first")
        session.add(ApiKey(name=name, key_hash=hash_key(token), prefix=token[:SHOWN], created_by=actor,
                           rate_per_minute=None if rate_per_minute is None else int(rate_per_minute)))
        record_action(session, actor, "deploy.key.add", f"api_key:{name}")
    return token


def _as_dict(row: ApiKey) -> dict:
    def when(moment):
        return moment.isoformat() if moment else None

    return {"name": row.name, "prefix": row.prefix, "rate_per_minute": row.rate_per_minute,
            "created_by": row.created_by, "created_at": when(row.created_at), "revoked_at": when(row.revoked_at),
            "last_used_at": when(row.last_used_at), "active": row.revoked_at is None}


def list_keys(store: Store) -> list[dict]:
    """Every key, revoked ones too, by name (never the hash)."""
    with store.session() as session:
        return [_as_dict(row) for row in session.scalars(select(ApiKey).order_by(ApiKey.name)).all()]


def revoke_key(store: Store, name: str, actor: str | None = None) -> dict:
    """Revokes the key ``name`` (at once, in every deployment: they check the store on each request)."""
    with store.session() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.name == str(name).strip()))
        if row is None:
            raise ApiKeyError(f"there is no key named '{name}' (see `studio deploy keys list`)")
        if row.revoked_at is None:
            row.revoked_at = datetime.now(timezone.utc)
            record_action(session, actor, "deploy.key.revoke", f"api_key:{row.name}")
        return _as_dict(row)


def verify_key(store: Store, token: str | None) -> dict | None:
    """The key ``token`` is, as ``list_keys`` shows it, when it exists and is not revoked; else None. Marks it
    used (at most once a minute: a busy client would otherwise make every request a write)."""
    if not token or not token.startswith(PREFIX):
        return None
    with store.session() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(token)))
        if row is None or row.revoked_at is not None:
            return None
        now, last = datetime.now(timezone.utc), as_utc(row.last_used_at)
        if last is None or now - last >= USE_NOTED_EVERY:
            row.last_used_at = now
        return _as_dict(row)
