"""What every handler needs: the tenant a request addresses, once the caller may act on it.

Routes live under two bases: `/tenants/{tenant}/dicomweb/...` and, for the default tenant,
`/dicomweb/...`. The authentication middleware puts a Principal on `request.state.principal` before
any handler runs (when auth is disabled for local development, a principal allowed everything).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request

from dicomlake.errors import InvalidName
from dicomlake.store.lakehouse import DEFAULT_TENANT, Lakehouse, TenantStore

if TYPE_CHECKING:
    from dicomlake.search import SearchIndex

# read: QIDO, WADO, change feed; write: STOW; delete: DELETE; export: POST /export and its operations
# (bulk copies of the tenant's data to the server's export folder); admin: everything, including
# extended query tags and every operation.
MAX_BODY = 1 << 20  # JSON request bodies
PERMISSIONS = ("read", "write", "delete", "export", "admin")


@dataclass(frozen=True)
class Principal:
    name: str  # for audit and access logs: never a token
    tenants: frozenset[str]  # "*" for every tenant
    permissions: frozenset[str]

    def may(self, tenant: str, permission: str) -> bool:
        in_tenant = "*" in self.tenants or tenant in self.tenants
        return in_tenant and (permission in self.permissions or "admin" in self.permissions)


def lakehouse(request: Request) -> Lakehouse:
    return request.app.state.lakehouse


def tenant_of(request: Request, permission: str) -> TenantStore:
    """The request's tenant; 401 without a principal, 403 when it may not `permission` there."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})
    name = request.path_params.get("tenant", DEFAULT_TENANT)
    if not principal.may(name, permission):
        # The same answer whether or not the tenant exists: nothing leaks across tenants.
        raise HTTPException(403, f"not allowed to {permission} in this tenant")
    try:
        return lakehouse(request).tenant(name)
    except InvalidName as exc:
        raise HTTPException(404, str(exc)) from None


def search_index(request: Request, tenant: TenantStore) -> SearchIndex:
    """The app's long-lived SearchIndex of a tenant (its snapshot cache is what makes QIDO fast)."""
    from dicomlake.search import SearchIndex

    indexes: dict[str, SearchIndex] = request.app.state.search_indexes
    index = indexes.get(tenant.name)
    if index is None:
        index = indexes.setdefault(tenant.name, SearchIndex(tenant))
    return index


def dicomweb_base(request: Request) -> str:
    """The absolute DICOMweb base URL the request used, e.g. `http://host:8042/tenants/a/dicomweb`
    (or `.../dicomweb` for the default tenant): for RetrieveURL, BulkDataURI and Location values."""
    scope = request.scope
    app_root = scope.get("app_root_path", scope.get("root_path", ""))
    mounted = scope.get("root_path", "")[len(app_root):]
    return str(request.base_url).rstrip("/") + mounted


async def json_body(request: Request) -> Any:
    """The JSON body of a request: 415 unless application/json, 413 past MAX_BODY, 400 when not JSON."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise HTTPException(415, "send application/json")
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > MAX_BODY:
        raise HTTPException(413, f"the body must be at most {MAX_BODY} bytes")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(413, "request body too large")
    try:
        return json.loads(body)
    except ValueError:
        raise HTTPException(400, "the body is not valid JSON") from None
