"""SCIM 2.0 service provider (RFC 7643/7644) for company directories: ``/scim/v2``.

One base URL for every workspace: the workspace is the one of the directory connection
whose bearer token the request carries (gateway.services.directory), never a part of
the URL, so a token can only ever name its own workspace's people and groups.

The protocol (routing, discovery, filters, PATCH, ``attributes`` /
``excludedAttributes``, ETags, the error schema) is scim2-server's, served in Flask by
scim2-flask; this module is the storage it calls, translating SCIM resources into the
directory service's calls (the same services, unit of work, audit and change log as the
admin API) and Ringfence's errors into SCIM errors.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any, Union, cast
from urllib.parse import urlsplit

from flask import Flask, Response, g, request
from limits import parse, storage, strategies
from scim2_flask import ScimServer
from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    ConflictException,
    EnterpriseUser,
    Error,
    ETag,
    Filter,
    Group,
    InvalidValueException,
    Meta,
    MutabilityException,
    NotFoundException,
    NotImplementedException,
    Patch,
    Path,
    PreconditionFailedException,
    Reference,
    Resource,
    ResourceType,
    ResponseParameters,
    SCIMException,
    ScimFilter,
    ScimProvider,
    SearchRequest,
    ServiceProviderConfig,
    Sort,
    UnauthorizedException,
    UniquenessException,
    User,
)
from scim2_server.handler import ScimHandler
from scim2_server.service import ScimService
from scim2_server.storage import ScimStorage, SearchPage
from scim2_server.utils import parametrize
from werkzeug.exceptions import HTTPException

from gateway.db.models import DirectoryConnection, DirectoryGroup, DirectoryUser
from gateway.errors import Conflict, InvalidInput, NotFound, RingfenceError, TooManyRequests
from gateway.logs import request_id
from gateway.services.directory import (
    TOKEN_PREFIX,
    DirectoryConflict,
    DirectoryPerson,
    DirectoryService,
    DirectoryTeam,
    VersionMismatch,
    directory_actor,
    etag,
)
from gateway.web.http import bearer_token, services
from gateway.web.state import gateway_state

log = logging.getLogger("ringfence.scim")
MAX_RESULTS = 1000  # a page of a list; directories page with startIndex and count

CONFIG = ServiceProviderConfig(
    patch=Patch(supported=True),
    bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
    filter=Filter(supported=True, max_results=MAX_RESULTS),
    change_password=ChangePassword(supported=False),
    sort=Sort(supported=False),
    etag=ETag(supported=True),
    authentication_schemes=[
        AuthenticationScheme(
            type=AuthenticationScheme.Type.oauthbearertoken,
            name="Bearer token",
            description="The directory connection's token (POST /directory-connections)",
            primary=True,
        )
    ],
)
PROVIDER = ScimProvider(
    models=[User, EnterpriseUser, Group],
    resource_types=[
        ResourceType.from_resource(User[EnterpriseUser]),
        ResourceType.from_resource(Group),
    ],
    config=CONFIG,
)
# The lookups directories make before creating someone, answered by an index.
_EQUALITY = re.compile(r'^\s*(userName|externalId)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.I)


def _directory() -> tuple[DirectoryConnection, DirectoryService]:
    return g.scim_connection, services().directory


def _actor(connection: DirectoryConnection) -> Any:
    return directory_actor(connection, request_id(), request.remote_addr)


@contextmanager
def scim_errors() -> Iterator[None]:
    """Ringfence's errors as SCIM's (RFC 7644 §3.12), with their scimType."""
    try:
        yield
    except NotFound as error:
        raise NotFoundException(detail=error.detail) from error
    except DirectoryConflict as error:
        if error.extensions.get("scim_type") == "mutability":
            raise MutabilityException(detail=error.detail) from error
        raise UniquenessException(detail=error.detail) from error
    except Conflict as error:
        raise ConflictException(detail=error.detail) from error
    except InvalidInput as error:
        raise InvalidValueException(detail=error.detail) from error
    except VersionMismatch as error:
        raise PreconditionFailedException(detail=error.detail) from error


def _model(resource_type: ResourceType) -> type[Resource[Any]]:
    return cast(type[Resource[Any]], PROVIDER.model_for(resource_type))


def _meta(resource_type: str, row: DirectoryUser | DirectoryGroup) -> dict[str, Any]:
    return {
        "resourceType": resource_type,
        "created": row.created_at.isoformat(),
        "lastModified": row.updated_at.isoformat(),
        "version": etag(row.version),
    }


def _without(resource: Resource[Any], *keys: str) -> dict[str, Any]:
    data = cast(dict[str, Any], resource.model_dump(mode="json"))
    for key in ("id", "meta", *keys):
        data.pop(key, None)
    return data


def person_of(resource: Resource[Any]) -> DirectoryPerson:
    """The directory service's view of a SCIM User (never its password)."""
    user = cast(User[Any], resource)
    if not user.user_name or len(user.user_name) > 320:
        raise InvalidValueException(detail="userName is required, at most 320 characters")
    emails = user.emails or []
    primary = next((e for e in emails if e.primary), emails[0] if emails else None)
    names = user.name
    full = " ".join(p for p in (names.given_name, names.family_name) if p) if names else ""
    display = user.display_name or (names.formatted if names else None) or full or user.user_name
    return DirectoryPerson(
        user_name=user.user_name,
        external_id=user.external_id,
        active=user.active is not False,
        email=primary.value if primary else None,
        display_name=display[:200],
        # ``active`` stays as sent (or absent); the directory user's own flag is its
        # meaning (absent: active).
        resource=_without(resource, "password", "groups", "userName", "externalId"),
    )


def team_of(resource: Resource[Any]) -> DirectoryTeam:
    group = cast(Group, resource)
    if not group.display_name or len(group.display_name) > 255:
        raise InvalidValueException(detail="displayName is required, at most 255 characters")
    return DirectoryTeam(
        display_name=group.display_name,
        external_id=group.external_id,
        members=[m.value for m in group.members or [] if m.value],
        # Members as sent (display, type), for reading back; who they are is the rows'.
        resource=_without(resource, "displayName", "externalId"),
    )


class DirectoryStorage(ScimStorage):
    """scim2-server's storage over the directory service, for the request's connection."""

    def _user(
        self, resource_type: ResourceType, member: DirectoryUser, groups: list[DirectoryGroup]
    ) -> Resource[Any]:
        data = {
            **member.resource,
            "id": member.scim_id,
            "userName": member.user_name,
            "meta": _meta("User", member),
        }
        if member.external_id is not None:
            data["externalId"] = member.external_id
        if "active" in member.resource or not member.active:
            data["active"] = member.active
        if groups:
            data["groups"] = [
                {"value": g.scim_id, "display": g.display_name, "$ref": f"Groups/{g.scim_id}"}
                for g in groups
            ]
        return _model(resource_type).model_validate(data)

    def _group(
        self, resource_type: ResourceType, group: DirectoryGroup, members: list[DirectoryUser]
    ) -> Resource[Any]:
        data = {
            **group.resource,
            "id": group.scim_id,
            "displayName": group.display_name,
            "meta": _meta("Group", group),
        }
        if group.external_id is not None:
            data["externalId"] = group.external_id
        data.pop("members", None)
        if members:
            sent = {m.get("value"): m for m in group.resource.get("members", [])}
            data["members"] = [
                {
                    "value": m.scim_id,
                    "display": sent.get(m.scim_id, {}).get("display", m.user_name),
                    "type": "User",
                    "$ref": f"Users/{m.scim_id}",
                }
                for m in members
            ]
        return _model(resource_type).model_validate(data)

    def _read(self, resource_type: ResourceType, resource_id: str) -> Resource[Any]:
        connection, directory = _directory()
        with scim_errors():
            if resource_type.name == "User":
                member = directory.user(connection, resource_id)
                return self._user(
                    resource_type, member, directory.group_names_of([member])[member.id]
                )
            group = directory.group(connection, resource_id)
            return self._group(resource_type, group, directory.members([group])[group.id])

    def get(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        response_parameters: ResponseParameters[Any] | None = None,
    ) -> Resource[Any]:
        return self._read(resource_type, resource_id)

    def search(
        self,
        resource_types: list[ResourceType],
        search_request: SearchRequest[Any],
        *,
        position: Any = None,
    ) -> SearchPage:
        if len(resource_types) != 1:
            raise NotImplementedException(detail="Search /Users or /Groups, not the root")
        [resource_type] = resource_types
        found = self._candidates(resource_type, search_request)
        start = search_request.start_index_0 or 0
        stop = None if search_request.count is None else start + search_request.count
        return SearchPage(len(found), found[start:stop])

    def _candidates(
        self, resource_type: ResourceType, search_request: SearchRequest[Any]
    ) -> list[Resource[Any]]:
        connection, directory = _directory()
        scim_filter = search_request.filter
        text = str(scim_filter) if scim_filter is not None else ""
        if resource_type.name == "User":
            lookup = _EQUALITY.match(text)
            if lookup:
                attribute, value = lookup.group(1).lower(), re.sub(r"\\(.)", r"\1", lookup[2])
                members = directory.users_where(
                    connection,
                    user_name=value if attribute == "username" else None,
                    external_id=value if attribute == "externalid" else None,
                )
                scim_filter = None
            else:
                members = directory.list_users(connection)
            groups = directory.group_names_of(members)
            resources = [self._user(resource_type, m, groups[m.id]) for m in members]
        else:
            teams = directory.list_groups(connection)
            everyone = directory.members(teams)
            resources = [self._group(resource_type, t, everyone[t.id]) for t in teams]
        if scim_filter is None or not resources:
            return resources
        model = _model(resource_type)
        typed = parametrize(ScimFilter, Union[model])(text)  # noqa: UP007
        return [r for r in resources if typed.match(r)]

    def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        connection, directory = _directory()
        actor = _actor(connection)
        with scim_errors():
            if resource_type.name == "User":
                member = directory.create_user(actor, connection, person_of(resource))
                return self._created_user(resource, member)
            group = directory.create_group(actor, connection, team_of(resource))
        return self._read(resource_type, group.scim_id)

    @staticmethod
    def _created_user(resource: Resource[Any], member: DirectoryUser) -> Resource[Any]:
        """The answer to a creation: the resource as the request's validation made it,
        with what :meth:`_user` reads back for a new member (its id and meta, no password,
        in no group; the rest is what was stored from this very resource), instead of
        validating it a second time. The same answer a read gives (tested)."""
        return resource.model_copy(
            update={
                "id": member.scim_id,
                "meta": Meta.model_validate(_meta("User", member)),
                "password": None,
                "groups": None,
            }
        )

    def update(
        self,
        resource_type: ResourceType,
        resource: Resource[Any],
        *,
        expected_version: str | None = None,
    ) -> Resource[Any]:
        connection, directory = _directory()
        actor = _actor(connection)
        resource_id = cast(str, resource.id)
        with scim_errors():
            if resource_type.name == "User":
                directory.replace_user(
                    actor, connection, resource_id, person_of(resource), expected_version
                )
            else:
                directory.replace_group(
                    actor, connection, resource_id, team_of(resource), expected_version
                )
        return self._read(resource_type, resource_id)

    def delete(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        expected_version: str | None = None,
    ) -> None:
        connection, directory = _directory()
        actor = _actor(connection)
        with scim_errors():
            if resource_type.name == "User":
                directory.delete_user(actor, connection, resource_id, expected_version)
            else:
                directory.delete_group(actor, connection, resource_id, expected_version)


@functools.cache
def _reference_heads(model: type[Resource[Any]]) -> tuple[Path[Any], ...]:
    """The attributes of ``model`` that hold references to other resources (a user's
    groups and manager, a group's members): what ScimService.publish turns into URLs."""
    heads = []
    for path in parametrize(Path, model).iter_paths(target_type=[Reference]):
        binding = path.resolve()
        assert binding is not None
        kinds = set(cast(type[Reference[Any]], binding.target_type).__reference_types__)
        if kinds and not kinds & {"external", "uri"}:
            heads.append(Path(f"{path.schema}:{path.parts[0]}" if path.schema else path.parts[0]))
    return tuple(heads)


def _refers_elsewhere(resource: Resource[Any]) -> bool:
    """Whether ``resource`` holds a reference to another resource in one of
    :func:`_reference_heads` (what ``Path.get`` tells, read by attribute: the path's walk
    cost 0.05 ms a head)."""
    for schema, attribute in _reference_attributes(type(resource)):
        holder: Any = resource if schema is None else resource[schema]
        if holder is not None and getattr(holder, _python_name(holder.__class__, attribute), None):
            return True
    return False


@functools.cache
def _reference_attributes(model: type[Resource[Any]]) -> tuple[tuple[Any, str], ...]:
    """:func:`_reference_heads` as (the extension model holding it, or None for the
    resource itself; the attribute's SCIM name)."""
    extensions: dict[str, Any] = {
        str(extension.__schema__): extension for extension in model.get_extension_models().values()
    }
    return tuple(
        (extensions.get(str(head.schema)), head.parts[0]) for head in _reference_heads(model)
    )


@functools.cache
def _python_name(model: Any, attribute: str) -> str:
    """The field of ``model`` a SCIM attribute name (any case) is serialized as."""
    for name, field in model.model_fields.items():
        if attribute.lower() in {name.lower(), (field.serialization_alias or "").lower()}:
            return name
    raise LookupError(f"{model.__name__} has no attribute {attribute!r}")


class DirectoryScimService(ScimService):
    """scim2-server's service, publishing a resource that refers to no other resource
    without copying it deeply or walking its reference paths (together 0.28 ms a
    resource, most of a created user's answer): the answer is the same, and the copy
    protects nothing here, as DirectoryStorage builds every resource it returns for that
    answer alone."""

    def publish(self, base_url: str, resource: Resource[Any]) -> Resource[Any]:
        if _refers_elsewhere(resource):
            return super().publish(base_url, resource)
        assert resource.meta is not None
        assert resource.id is not None
        update: dict[str, Any] = {
            "location": self.resource_location(
                base_url, self.get_resource_type_of(resource), resource.id
            )
        }
        if not self.etag_supported:
            update["version"] = None
        # model_copy's update is not validated again (an assignment was: 0.03 ms).
        return resource.model_copy(update={"meta": resource.meta.model_copy(update=update)})


class DirectoryScimServer(ScimServer):
    """scim2-flask's server with the directory's token required on every endpoint, and
    every error in the SCIM error schema, serving the routes of
    :mod:`gateway.web.scim_mount`."""

    limiter: ConnectionLimiter

    def serve(self) -> Response:
        """The current request, routed by scim2-server (as scim2-flask's fallback route
        does), once its connection is known."""
        try:
            self._authenticate()
            return self._to_response(self.handler.handle(self.read_request()))
        except Exception as error:
            return self.error_response(error)

    def error_response(self, error: Exception) -> Response:
        """Any error of a SCIM request (the app's hooks' too) in the SCIM error schema."""
        if isinstance(error, SCIMException):
            return self._handle_scim_exception(error)
        if isinstance(error, RingfenceError):
            return self._ringfence_error(error)
        if isinstance(error, HTTPException):
            return self._handle_http_exception(error)
        # Never leak internals: the trace goes to the log, the directory gets an id for it.
        log.exception("unhandled SCIM error (request %s)", request_id())
        return self._ringfence_error(RingfenceError(f"Internal error, request {request_id()}"))

    def _authenticate(self) -> None:
        """The request's connection, from ``Authorization: Bearer rfd_...`` (401
        otherwise), within its request budget (429 beyond)."""
        g.scim_connection = _connection()
        self.limiter.hit(g.scim_connection.id)

    def get_subject(self) -> Any:
        return g.get("scim_connection")

    def _ringfence_error(self, error: RingfenceError) -> Response:
        status = HTTPStatus(error.status)
        body = Error(status=status.value, detail=error.detail or error.title).model_dump()
        response = Response(
            json.dumps(body), status=status.value, content_type="application/scim+json"
        )
        if "retry_after" in error.extensions:
            response.headers["Retry-After"] = str(error.extensions["retry_after"])
        return response


def _connection() -> DirectoryConnection:
    """The live connection whose token the request carries; 401 otherwise."""
    token = bearer_token(request.headers.get("Authorization", ""))
    if token is None or not token.startswith(TOKEN_PREFIX):
        raise UnauthorizedException(detail="Send the directory connection's bearer token")
    connection = services().directory.connection_for_token(token)
    if connection is None:
        raise UnauthorizedException(detail="The token is not a live directory connection's")
    return connection


class ConnectionLimiter:
    """At most ``RINGFENCE_SCIM_REQUESTS_PER_CONNECTION`` requests per connection (a
    moving window, counted in ``RINGFENCE_RATE_LIMIT_STORAGE_URL``): a directory that
    floods is answered 429 with Retry-After, as RFC 7644 §3.12 lets a provider.

    In memory (the default), the window is this process's own :class:`MovingWindow`:
    the limits library's memory storage starts a thread to expire entries 10 ms after
    any use when none runs, so a directory pushing every few milliseconds had a thread
    started for nearly each request (0.2 ms of CPU, measured)."""

    def __init__(self, storage_url: str, limit: str) -> None:
        self._item = parse(limit)
        self._window: MovingWindow | None = None
        self._limiter: strategies.MovingWindowRateLimiter | None = None
        if urlsplit(storage_url).scheme == "memory":
            self._window = MovingWindow(self._item.amount, self._item.get_expiry())
        else:
            self._limiter = strategies.MovingWindowRateLimiter(
                storage.storage_from_string(storage_url)
            )

    def hit(self, connection_id: int) -> None:
        key = f"scim-connection:{connection_id}"
        if self._window is not None:
            wait_seconds = self._window.hit(key)
            if wait_seconds is None:
                return
            wait = max(1, int(wait_seconds) + 1)
        else:
            assert self._limiter is not None
            if self._limiter.hit(self._item, key):
                return
            reset = self._limiter.get_window_stats(self._item, key).reset_time
            wait = max(1, int(reset - time.time()) + 1)
        raise TooManyRequests(
            f"Too many requests from this directory; try again in {wait} s",
            retry_after=wait,
        )


class MovingWindow:
    """``amount`` hits per key in any ``seconds``, in this process's memory, as the
    limits library's moving window counts them (its memory storage keeps the same
    timestamps), without a thread: a key's old hits are dropped when it is hit."""

    def __init__(self, amount: int, seconds: float) -> None:
        self.amount = amount
        self.seconds = seconds
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        # Monotonic seconds; a test moves it on rather than sleep through a window.
        self.clock: Callable[[], float] = time.monotonic

    def hit(self, key: str) -> float | None:
        """Count a hit of ``key``; None if it is within the limit, else the seconds until
        the window has room again (nothing is counted then)."""
        now = self.clock()
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                hits = self._hits[key] = deque()
            while hits and hits[0] <= now - self.seconds:
                hits.popleft()
            if len(hits) >= self.amount:
                return hits[0] + self.seconds - now
            hits.append(now)
            return None


def build_server(app: Flask, url_prefix: str) -> DirectoryScimServer:
    """``app``'s SCIM server, for the routes :mod:`gateway.web.scim_mount` registered
    under ``url_prefix``."""
    settings = gateway_state(app).settings
    server = DirectoryScimServer(DirectoryStorage(), PROVIDER, url_prefix=url_prefix)
    server.limiter = ConnectionLimiter(
        settings.rate_limit_storage_url, settings.scim_requests_per_connection
    )
    # What scim2-flask's init_app sets up, without its blueprint (the mount's routes).
    server.service = DirectoryScimService(PROVIDER, secret=app.secret_key)
    server.handler = ScimHandler(server.service, server.storage)
    return server
