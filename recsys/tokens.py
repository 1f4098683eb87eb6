"""Bearer tokens for the JSON API, shared by `recsys token ...` and the web server.

A token is shown once, when it is made; the database keeps only its SHA-256 (tokens are 256 random
bits, so a fast hash is enough: there is nothing to brute-force). A scope says what it may do:
``read`` (recommendations, similar items, search), ``write`` (read, and record events), ``admin``
(everything, the admin pages included).
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select

from recsys import store
from recsys.errors import NotFound, RecsysError

SCOPES = ("read", "write", "admin")
PREFIX = "rsk_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Token:
    """What a token is allowed to do; never holds the secret itself."""

    name: str
    scope: str
    created_at: datetime
    revoked_at: datetime | None = None
    id: int = 0  # which token this is: a new token may take a revoked one's name
    signed_out_at: datetime | None = None  # admin sessions signed in before this are over

    def allows(self, scope: str) -> bool:
        """Scopes are ordered: write includes read, admin includes both."""
        return SCOPES.index(self.scope) >= SCOPES.index(scope)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "scope": self.scope,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def create(workspace, name: str, scope: str = "read") -> str:
    """Make a token called ``name`` and return it (the only time it is seen in clear)."""
    if not _NAME.match(name or ""):
        raise RecsysError(f"token name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if scope not in SCOPES:
        raise RecsysError(f"token scope {scope!r}: use one of {', '.join(SCOPES)}")
    token = PREFIX + secrets.token_urlsafe(32)

    def write() -> None:
        with workspace.session() as session, session.begin():
            live = session.scalar(
                select(store.ApiToken.id).where(
                    store.ApiToken.name == name, store.ApiToken.revoked_at.is_(None)
                )
            )
            if live is not None:
                raise RecsysError(f"a token named {name!r} exists: revoke it first or pick another name")
            session.add(
                store.ApiToken(name=name, token_hash=digest(token), scope=scope, created_at=store.utcnow())
            )

    store.retry_on_busy(write)
    return token


def verify(workspace, token: str) -> Token | None:
    """The live token matching ``token``, or None (unknown, malformed or revoked)."""
    if not token or not token.startswith(PREFIX) or len(token) > 128:
        return None
    with workspace.engine.connect() as conn:
        row = conn.execute(_by_hash(), {"hash": digest(token)}).first()
    if row is None or row.revoked_at is not None:
        return None
    return _public(row)


@functools.cache
def _by_hash():
    table = store.ApiToken
    return select(
        table.name, table.scope, table.created_at, table.revoked_at, table.id, table.signed_out_at
    ).where(table.token_hash == bindparam("hash"))


def list_tokens(workspace, *, include_revoked: bool = False) -> list[Token]:
    query = select(store.ApiToken).order_by(store.ApiToken.created_at, store.ApiToken.id)
    if not include_revoked:
        query = query.where(store.ApiToken.revoked_at.is_(None))
    with workspace.session() as session:
        return [_public(row) for row in session.scalars(query)]


def live(workspace, token_id: int) -> Token | None:
    """The token with this id if it is live (not revoked): a signed-in admin page re-checks it."""
    query = select(store.ApiToken).where(store.ApiToken.id == token_id, store.ApiToken.revoked_at.is_(None))
    with workspace.session() as session:
        row = session.scalar(query)
        return _public(row) if row is not None else None


def sign_out(workspace, token_id: int) -> None:
    """End every admin browser session signed in with this token until now (a replayed cookie too)."""

    def write() -> None:
        with workspace.session() as session, session.begin():
            row = session.get(store.ApiToken, token_id)
            if row is not None:
                row.signed_out_at = store.utcnow()

    store.retry_on_busy(write)


def revoke(workspace, name: str) -> None:
    """Revoke the live token called ``name``; it stops working at the next request."""

    def write() -> None:
        with workspace.session() as session, session.begin():
            row = session.scalar(
                select(store.ApiToken).where(store.ApiToken.name == name, store.ApiToken.revoked_at.is_(None))
            )
            if row is None:
                raise NotFound(f"no live token named {name!r}")
            row.revoked_at = store.utcnow()

    store.retry_on_busy(write)


def _public(row) -> Token:
    return Token(
        row.name,
        row.scope,
        store.as_utc(row.created_at),
        store.as_utc(row.revoked_at) if row.revoked_at else None,
        row.id,
        store.as_utc(row.signed_out_at) if row.signed_out_at else None,
    )
