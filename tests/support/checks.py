"""Drive the gRPC edge in process: a CheckRequest in, the CheckResponse and the
decision log record out.

    outcome = check(service, token=mint(CORP))
    outcome.status, outcome.reason        # 401, "signature_invalid"

`RecordingKeys` is a key provider that serves fixed key sets and records every
call, and `AuditWatch` records the process's own network connections and file
opens (Python audit events), so a test can show that nothing was fetched or read.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2

from ext_authz.envoy.server import AuthorizationService
from ext_authz.keys.jwks import KeySet
from ext_authz.keys.store import IssuerKeys, KeyStatus
from ext_authz.policy.model import Policy
from tests.support.doubles import static_key_sets

DECISION_LOGGER = "ext_authz.decision"


def check_request(
    *,
    path: str = "/api/orders",
    method: str = "GET",
    host: str = "api.test",
    token: str | None = None,
    authorization: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> external_auth_pb2.CheckRequest:
    """A CheckRequest as Envoy sends it (lower-case header names, `:path` with query)."""
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = method
    http.path = path
    http.host = host
    http.headers[":method"] = method
    http.headers[":path"] = path
    http.headers[":authority"] = host
    for name, value in (headers or {}).items():
        http.headers[name.lower()] = value
    if token is not None:
        http.headers["authorization"] = f"Bearer {token}"
    if authorization is not None:
        http.headers["authorization"] = authorization
    return request


@dataclass(frozen=True)
class Outcome:
    """What the client sees (status, headers, body) and what the operator sees (the
    decision log record)."""

    response: external_auth_pb2.CheckResponse
    record: logging.LogRecord | None

    @property
    def allowed(self) -> bool:
        return bool(self.response.HasField("ok_response"))

    @property
    def status(self) -> int:
        if self.allowed:
            return 200
        return int(self.response.denied_response.status.code)

    @property
    def reason(self) -> str | None:
        value = getattr(self.record, "reason", None)
        return value if isinstance(value, str) else None

    @property
    def detail(self) -> str | None:
        value = getattr(self.record, "detail", None)
        return value if isinstance(value, str) else None

    @property
    def body(self) -> str:
        return str(self.response.denied_response.body)

    def denied_header(self, name: str) -> str | None:
        for option in self.response.denied_response.headers:
            if option.header.key.lower() == name:
                return str(option.header.value)
        return None

    @property
    def www_authenticate(self) -> str | None:
        return self.denied_header("www-authenticate")

    @property
    def upstream_headers(self) -> dict[str, str]:
        return {
            str(option.header.key): str(option.header.value)
            for option in self.response.ok_response.headers
        }

    def __repr__(self) -> str:
        return f"Outcome(status={self.status}, reason={self.reason!r}, detail={self.detail!r})"


class DecisionLog(logging.Handler):
    """Collects the records of the decision logger while in a `with` block."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._saved_level = logging.NOTSET

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> DecisionLog:
        logger = logging.getLogger(DECISION_LOGGER)
        self._saved_level = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        logger = logging.getLogger(DECISION_LOGGER)
        logger.removeHandler(self)
        logger.setLevel(self._saved_level)

    def reasons(self) -> list[str | None]:
        return [getattr(r, "reason", None) for r in self.records]


def run_check(service: AuthorizationService, request: external_auth_pb2.CheckRequest) -> Outcome:
    with DecisionLog() as decisions:
        response = service.Check(request, None)
    record = decisions.records[-1] if decisions.records else None
    return Outcome(response, record)


def check(service: AuthorizationService, **request: Any) -> Outcome:
    """`run_check` on `check_request(**request)`."""
    return run_check(service, check_request(**request))


class RecordingKeys:
    """A `KeyProvider` over fixed key sets that records every call made to it.

    `refetch` answers with `after_refetch` (when given) for issuers in it, else None,
    as a provider in its cooldown would.
    """

    def __init__(
        self,
        keys: Mapping[str, KeySet],
        after_refetch: Mapping[str, KeySet] | None = None,
    ) -> None:
        self._keys = dict(keys)
        self._after = dict(after_refetch or {})
        self._lock = threading.Lock()
        self.calls: list[tuple[str, str]] = []

    @classmethod
    def of(cls, policy: Policy) -> RecordingKeys:
        return cls(static_key_sets(policy))

    def current(self, issuer: str) -> IssuerKeys:
        with self._lock:
            self.calls.append(("current", issuer))
        keys = self._keys.get(issuer)
        return IssuerKeys(keys, KeyStatus.STATIC if keys is not None else KeyStatus.FAILED)

    def refetch(self, issuer: str) -> IssuerKeys | None:
        with self._lock:
            self.calls.append(("refetch", issuer))
        keys = self._after.get(issuer)
        return IssuerKeys(keys, KeyStatus.FRESH) if keys is not None else None

    def issuers_asked(self) -> set[str]:
        with self._lock:
            return {issuer for _, issuer in self.calls}

    def refetches(self) -> list[str]:
        with self._lock:
            return [issuer for kind, issuer in self.calls if kind == "refetch"]

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()


# audit events ------------------------------------------------------------------

_WATCHED = frozenset({"socket.connect", "socket.getaddrinfo", "open", "urllib.Request"})
_active: list[AuditWatch] = []
_installed = False
_install_lock = threading.Lock()


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _active or event not in _WATCHED:
        return
    try:
        target = args[1] if event == "socket.connect" else args[0]
        entry = (event, target if isinstance(target, str | bytes | int | tuple) else repr(target))
        for watch in list(_active):
            watch.events.append(entry)
    except Exception:  # noqa: S110  (an audit hook must never break the audited call)
        pass


@dataclass
class AuditWatch:
    """Network connections, name lookups and file opens seen while active."""

    events: list[tuple[str, Any]] = field(default_factory=list)

    def connections(self) -> list[Any]:
        return [t for e, t in self.events if e in ("socket.connect", "socket.getaddrinfo")]

    def opened(self) -> list[str]:
        return [str(t) for e, t in self.events if e == "open"]

    def urls(self) -> list[Any]:
        return [t for e, t in self.events if e == "urllib.Request"]


@contextmanager
def audit_watch() -> Iterator[AuditWatch]:
    global _installed
    with _install_lock:
        if not _installed:
            sys.addaudithook(_audit)
            _installed = True
    watch = AuditWatch()
    _active.append(watch)
    try:
        yield watch
    finally:
        _active.remove(watch)
