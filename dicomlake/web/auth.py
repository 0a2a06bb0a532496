"""API tokens and the middleware that turns `Authorization: Bearer <token>` into a Principal.

Where tokens live: a Delta table at `<root>/auth/tokens`, beside the tenants (a token may span
several), written through the same storage as everything else, so a local folder and S3 work
alike. Why a Delta table and not a JSON document: two admins (or an admin and a deploy script)
may run `dicomlake tokens create` at the same moment; on S3 a whole-document rewrite would let the
last writer silently drop the other's token, while each Delta commit here is a put-if-absent that
carries an app-transaction version (`dicomlake.tokens`), so concurrent commits conflict and the
loser retries against the winner's state. The table is an append-only log of `create` and
`revoke` events; the live tokens are its fold. It stores a token's SHA-256, never the token.

Tokens are 256 random bits (`secrets.token_urlsafe(32)`) prefixed `dlk_`, so a SHA-256 lookup is
enough: there is nothing to brute-force and no per-token salt is needed. The found digest is also
compared with `hmac.compare_digest`. The server reads the table again at most every REFRESH_S
seconds (and, on an unknown token, at most every MISS_REFRESH_S), so a revoke takes effect within
a few seconds in every server process.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from dicomlake.errors import DicomlakeError
from dicomlake.store.lakehouse import check_tenant
from dicomlake.web.context import PERMISSIONS, Principal

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from dicomlake.store.lakehouse import Lakehouse

TOKEN_PREFIX = "dlk_"
TOKENS_APP = "dicomlake.tokens"
REFRESH_S = 2.0
MISS_REFRESH_S = 0.25
MAX_ATTEMPTS = 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Paths served without a token: they carry no data.
PUBLIC_PATHS = frozenset({"/health", "/docs", "/openapi.json"})
# The principal of `dicomlake serve --no-auth` (local development only).
LOCAL_DEVELOPER = Principal("local-dev (auth disabled)", frozenset({"*"}), frozenset(PERMISSIONS))


class TokenError(DicomlakeError, ValueError):
    """A token that cannot be created or revoked as asked (bad name, tenant, permission; duplicate)."""


@dataclass(frozen=True)
class TokenRecord:
    name: str
    token_sha256: str
    tenants: frozenset[str]
    permissions: frozenset[str]
    created_at: dt.datetime
    expires_at: dt.datetime | None

    def expired(self, now: dt.datetime | None = None) -> bool:
        return self.expires_at is not None and (now or dt.datetime.now(dt.UTC)) >= self.expires_at

    def principal(self) -> Principal:
        return Principal(self.name, self.tenants, self.permissions)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tenants": sorted(self.tenants),
            "permissions": sorted(self.permissions),
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "expired": self.expired(),
        }


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """The lakehouse's API tokens. One per server process; thread-safe."""

    def __init__(self, lakehouse: Lakehouse) -> None:
        self.lakehouse = lakehouse
        self.uri = f"{lakehouse.root}/auth/tokens"
        self._lock = threading.Lock()
        self._table: DeltaTable | None = None
        self._version = -2
        self._by_digest: dict[str, TokenRecord] = {}
        self._checked = 0.0

    # -- admin -----------------------------------------------------------------------------------
    def create(
        self,
        name: str,
        tenants: list[str] | set[str] | frozenset[str],
        permissions: list[str] | set[str] | frozenset[str],
        expires_at: dt.datetime | None = None,
    ) -> tuple[str, TokenRecord]:
        """A new token: (the secret, shown once; its record). TokenError on a bad or taken name."""
        if not _NAME.match(name or ""):
            raise TokenError(f"token name {name!r}: 1-64 letters, digits, '.', '_' or '-'")
        tenant_set = frozenset(tenants)
        if not tenant_set:
            raise TokenError("a token needs at least one tenant (or all tenants)")
        for tenant in tenant_set - {"*"}:
            check_tenant(tenant)
        permission_set = frozenset(permissions)
        unknown = permission_set - set(PERMISSIONS)
        if not permission_set or unknown:
            raise TokenError(
                f"permissions must be among {', '.join(PERMISSIONS)} (got {sorted(permissions)})")
        if expires_at is not None and expires_at.tzinfo is None:
            raise TokenError("expires_at needs a time zone")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = dt.datetime.now(dt.UTC)
        record = TokenRecord(name, digest(token), tenant_set, permission_set, now, expires_at)

        def event(live: dict[str, TokenRecord]) -> dict[str, Any]:
            if name in live:
                raise TokenError(f"a token named {name!r} exists; revoke it first")
            return {"event": "create", "name": name, "token_sha256": record.token_sha256,
                    "tenants": sorted(tenant_set), "permissions": sorted(permission_set),
                    "expires_at": expires_at, "at": now}

        self._commit(event)
        return token, record

    def revoke(self, name: str) -> TokenRecord:
        """Revoke a token by name; TokenError when there is no such token."""
        revoked: list[TokenRecord] = []

        def event(live: dict[str, TokenRecord]) -> dict[str, Any]:
            if name not in live:
                raise TokenError(f"no token named {name!r}")
            revoked[:] = [live[name]]
            return {"event": "revoke", "name": name, "token_sha256": None, "tenants": None,
                    "permissions": None, "expires_at": None, "at": dt.datetime.now(dt.UTC)}

        self._commit(event)
        return revoked[0]

    def list(self) -> list[TokenRecord]:
        table = self._open(create=False)
        if table is None:
            return []
        return sorted(_fold(table).values(), key=lambda r: r.name)

    # -- the server's side -----------------------------------------------------------------------
    def authenticate(self, token: str) -> Principal | None:
        """The principal a presented token stands for, or None (unknown, revoked, expired)."""
        wanted = digest(token)
        now = time.monotonic()
        with self._lock:
            if now - self._checked > REFRESH_S:
                self._reload(now)
            record = self._by_digest.get(wanted)
            if record is None and now - self._checked > MISS_REFRESH_S:
                self._reload(now)
                record = self._by_digest.get(wanted)
        if record is None or not hmac.compare_digest(record.token_sha256, wanted) or record.expired():
            return None
        return record.principal()

    # -- internals -------------------------------------------------------------------------------
    def _open(self, create: bool) -> DeltaTable | None:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        from dicomlake.store.schemas import TOKENS

        options = self.lakehouse.storage_options or None
        try:
            return DeltaTable(self.uri, storage_options=options)
        except TableNotFoundError:
            if not create:
                return None
        try:
            return DeltaTable.create(self.uri, TOKENS, mode="ignore", name="tokens",
                                     configuration={"delta.appendOnly": "true"}, storage_options=options)
        except Exception:  # created by another process at the same moment
            return DeltaTable(self.uri, storage_options=options)

    def _reload(self, now: float) -> None:
        self._checked = now
        if self._table is None:
            self._table = self._open(create=False)
            if self._table is None:
                self._by_digest = {}
                return
        else:
            self._table.update_incremental()
        version = self._table.version()
        if version != self._version:
            self._by_digest = {r.token_sha256: r for r in _fold(self._table).values()}
            self._version = version

    def _commit(self, make_event: Any) -> None:
        from deltalake import CommitProperties, Transaction, write_deltalake
        from deltalake.exceptions import CommitFailedError

        from dicomlake.store.schemas import TOKENS

        for attempt in range(MAX_ATTEMPTS):
            table = self._open(create=True)
            assert table is not None
            revision = table.transaction_version(TOKENS_APP) or 0
            row = {"revision": revision + 1, **make_event(_fold(table))}
            try:
                write_deltalake(
                    table, pa.Table.from_pylist([row], schema=TOKENS), mode="append",
                    commit_properties=CommitProperties(
                        app_transactions=[Transaction(app_id=TOKENS_APP, version=revision + 1)],
                        custom_metadata={"dicomlake.operation": f"token_{row['event']}"},
                    ),
                )
            except CommitFailedError:
                time.sleep(0.02 * (attempt + 1))
                continue
            with self._lock:
                self._checked = 0.0  # this process sees its own create or revoke at once
            return
        raise TokenError(f"the token table did not commit in {MAX_ATTEMPTS} attempts")


def _fold(table: DeltaTable) -> dict[str, TokenRecord]:
    """The live tokens by name: every create not revoked after it."""
    from dicomlake.store.read import scan

    live: dict[str, TokenRecord] = {}
    for row in scan(table, order_by="revision").to_pylist():
        if row["event"] == "create":
            live[row["name"]] = TokenRecord(
                row["name"], row["token_sha256"], frozenset(row["tenants"] or ()),
                frozenset(row["permissions"] or ()), row["at"], row["expires_at"])
        elif row["event"] == "revoke":
            live.pop(row["name"], None)
    return live


@dataclass(frozen=True)
class AuthConfig:
    """How the app authenticates: a TokenStore, or `disabled=True` (local development only)."""

    tokens: TokenStore | None = None
    disabled: bool = False

    @classmethod
    def for_lakehouse(cls, lakehouse: Lakehouse) -> AuthConfig:
        return cls(TokenStore(lakehouse))


async def _refuse(send: Send, error: str | None, description: str) -> None:
    challenge = 'Bearer realm="dicomlake"'
    if error:
        challenge += f', error="{error}"'
    body = json.dumps({"error": "unauthorized", "detail": description}).encode()
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", challenge.encode()),
    ]})
    await send({"type": "http.response.body", "body": body})


class AuthMiddleware:
    """Sets scope['state']['principal'] from the bearer token; 401 when there is none or it is bad.

    Authorization (which tenant, which permission) is the handlers' job, through
    `dicomlake.web.context.tenant_of`, so that it is the same 403 everywhere.
    """

    def __init__(self, app: ASGIApp, config: AuthConfig) -> None:
        if not config.disabled and config.tokens is None:
            raise ValueError("auth needs a TokenStore (or disabled=True for local development)")
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if self.config.disabled:
            state["principal"] = LOCAL_DEVELOPER
            await self.app(scope, receive, send)
            return
        if scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            await _refuse(send, None, "a bearer token is required (Authorization: Bearer <token>)")
            return
        assert self.config.tokens is not None
        principal = await run_in_threadpool(self.config.tokens.authenticate, token)
        if principal is None:
            await _refuse(send, "invalid_token", "the token is unknown, revoked or expired")
            return
        state["principal"] = principal
        await self.app(scope, receive, send)
