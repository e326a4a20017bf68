"""A demo identity provider: several named issuers with in-memory signing keys.

For issuer ``corp`` at base URL ``http://HOST:PORT`` it serves:

- ``GET /corp/.well-known/openid-configuration``: the discovery document;
- ``GET /corp/jwks.json``: the public keys (``Cache-Control: max-age=300``);
- ``GET /corp/token?sub=&scope=&aud=&ttl=&email=&email_verified=&tenant=``: a fresh
  signed access token, as ``{"access_token", "token_type", "expires_in"}``.

Keys are generated at start and live only in memory; private key members are never
served, logged or shown in a ``repr``. Test hooks: :meth:`DemoIssuer.rotate` adds a new
signing key, :meth:`DemoIssuer.set_outage` makes every endpoint answer 503, and
:meth:`DemoIssuer.jwks_fetches` counts JWKS requests.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from ext_authz.demo.upstream import QuietHTTPServer, parse_listen, wait_for_stop_signal

_log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9100"
DEFAULT_ISSUERS: Mapping[str, str] = {"corp": "RS256", "partner": "ES256"}
SUPPORTED_ALGORITHMS = ("RS256", "PS256", "ES256", "ES384")
DEFAULT_SUB = "demo-user"
DEFAULT_AUD = "orders-api"
DEFAULT_SCOPE = "orders:read"
DEFAULT_TTL = 600
DEFAULT_TENANT = "acme"
MAX_TTL = 7 * 24 * 3600
JWKS_CACHE_CONTROL = "max-age=300"

SigningKey = RSAKey | ECKey


class UnknownIssuerError(KeyError):
    """No issuer of that name."""


def _generate_key(alg: str, kid: str) -> SigningKey:
    parameters: Any = {"kid": kid, "alg": alg, "use": "sig"}
    if alg in ("RS256", "PS256"):
        return RSAKey.generate_key(2048, parameters=parameters)
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters=parameters)
    if alg == "ES384":
        return ECKey.generate_key("P-384", parameters=parameters)
    raise ValueError(f"unsupported algorithm {alg!r}; choose one of {SUPPORTED_ALGORITHMS}")


def _new_kid(name: str) -> str:
    return f"{name}-{secrets.token_hex(6)}"


@dataclass(eq=False)
class _Issuer:
    name: str
    alg: str
    published: list[SigningKey] = field(repr=False)  # oldest first; the last one signs
    jwks_fetches: int = 0

    @property
    def signing_key(self) -> SigningKey:
        return self.published[-1]


def _normalize_names(names: Mapping[str, str] | Iterable[str]) -> dict[str, str]:
    if isinstance(names, Mapping):
        return dict(names)
    return {name: DEFAULT_ISSUERS.get(name, "RS256") for name in names}


class DemoIssuer:
    """Named issuers, each with its own signing key(s), below one base URL."""

    def __init__(
        self,
        base_url: str,
        names: Mapping[str, str] | Iterable[str] = DEFAULT_ISSUERS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._lock = threading.Lock()
        self._outage = False
        self._issuers: dict[str, _Issuer] = {}
        for name, alg in _normalize_names(names).items():
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"bad issuer name {name!r}")
            key = _generate_key(alg, _new_kid(name))
            self._issuers[name] = _Issuer(name=name, alg=alg, published=[key])

    def __repr__(self) -> str:
        return f"DemoIssuer(base_url={self.base_url!r}, names={self.names})"

    @property
    def names(self) -> list[str]:
        return list(self._issuers)

    def _get(self, name: str) -> _Issuer:
        try:
            return self._issuers[name]
        except KeyError:
            raise UnknownIssuerError(name) from None

    def algorithm(self, name: str) -> str:
        return self._get(name).alg

    def issuer_id(self, name: str) -> str:
        """The ``iss`` value of issuer ``name``."""
        self._get(name)
        return f"{self.base_url}/{name}"

    def jwks_uri(self, name: str) -> str:
        return f"{self.issuer_id(name)}/jwks.json"

    def discovery_url(self, name: str) -> str:
        return f"{self.issuer_id(name)}/.well-known/openid-configuration"

    def token_url(self, name: str) -> str:
        return f"{self.issuer_id(name)}/token"

    def current_kid(self, name: str) -> str:
        with self._lock:
            kid = self._get(name).signing_key.kid
        assert kid is not None
        return kid

    def discovery(self, name: str) -> dict[str, Any]:
        """The OpenID Connect discovery document of issuer ``name``."""
        return {
            "issuer": self.issuer_id(name),
            "jwks_uri": self.jwks_uri(name),
            "token_endpoint": self.token_url(name),
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.algorithm(name)],
        }

    def jwks(self, name: str) -> dict[str, Any]:
        """The public JWKS of issuer ``name``: public members only."""
        with self._lock:
            keys = list(self._get(name).published)
        return {"keys": [dict(key.as_dict(private=False)) for key in keys]}

    def mint(
        self,
        name: str,
        *,
        ttl: int = DEFAULT_TTL,
        now: int | None = None,
        header: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A signed JWT from issuer ``name``.

        Defaults: ``iss``, ``sub`` (``demo-user``), ``aud`` (``orders-api``), ``iat``,
        ``nbf``, ``exp`` (``now + ttl``), ``scope`` (``orders:read``) and ``jti``. Keyword
        claims override them; a claim given as ``None`` is left out. ``header`` adds to
        or overrides the protected header (``alg``, ``kid``, ``typ``).
        """
        issuer = self._get(name)
        issued_at = int(time.time()) if now is None else now
        payload: dict[str, Any] = {
            "iss": self.issuer_id(name),
            "sub": DEFAULT_SUB,
            "aud": DEFAULT_AUD,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + ttl,
            "scope": DEFAULT_SCOPE,
            "jti": secrets.token_urlsafe(16),
        }
        payload.update(claims)
        payload = {key: value for key, value in payload.items() if value is not None}
        with self._lock:
            key = issuer.signing_key
        protected: dict[str, Any] = {"typ": "JWT", "alg": issuer.alg, "kid": key.kid}
        if header:
            protected.update(header)
        return jwt.encode(protected, payload, key, algorithms=[issuer.alg])

    def rotate(self, name: str, *, keep_old: bool = True) -> str:
        """Start signing with a new key for ``name``; return its ``kid``.

        With ``keep_old`` the previous keys stay in the JWKS, as during a real rotation.
        """
        issuer = self._get(name)
        key = _generate_key(issuer.alg, _new_kid(name))
        with self._lock:
            issuer.published = [*issuer.published, key] if keep_old else [key]
        assert key.kid is not None
        return key.kid

    def set_outage(self, down: bool) -> None:
        """While down, every HTTP endpoint answers 503 (the Python API keeps working)."""
        with self._lock:
            self._outage = down

    @property
    def outage(self) -> bool:
        with self._lock:
            return self._outage

    def jwks_fetches(self, name: str) -> int:
        """How many JWKS requests for ``name`` were answered with keys."""
        with self._lock:
            return self._get(name).jwks_fetches

    def record_jwks_fetch(self, name: str) -> None:
        with self._lock:
            self._get(name).jwks_fetches += 1


class _BadQueryError(ValueError):
    pass


def _one(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise _BadQueryError(f"{name} given more than once")
    return values[0]


def _bool_param(query: Mapping[str, list[str]], name: str, default: bool) -> bool:
    value = _one(query, name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise _BadQueryError(f"{name} must be true or false")


def token_claims_from_query(query: Mapping[str, list[str]]) -> tuple[int, dict[str, Any]]:
    """``(ttl, claims)`` for a ``/token`` request's query parameters."""
    ttl_text = _one(query, "ttl")
    if ttl_text is None:
        ttl = DEFAULT_TTL
    else:
        try:
            ttl = int(ttl_text)
        except ValueError:
            raise _BadQueryError("ttl must be an integer number of seconds") from None
        if not -MAX_TTL <= ttl <= MAX_TTL:
            raise _BadQueryError(f"ttl must be within +/-{MAX_TTL}")
    sub = _one(query, "sub") or DEFAULT_SUB
    aud_values = query.get("aud") or [DEFAULT_AUD]
    aud: str | list[str] = aud_values[0] if len(aud_values) == 1 else list(aud_values)
    scope_values = query.get("scope") or [DEFAULT_SCOPE]
    scope = " ".join(part for value in scope_values for part in value.split())
    claims: dict[str, Any] = {
        "sub": sub,
        "aud": aud,
        "scope": scope,
        "email": _one(query, "email") or f"{sub}@example.com",
        "email_verified": _bool_param(query, "email_verified", default=True),
        "org": {"tenant": _one(query, "tenant") or DEFAULT_TENANT},
    }
    return ttl, claims


class IssuerHTTPServer(QuietHTTPServer):
    """The HTTP face of a :class:`DemoIssuer`."""

    issuer: DemoIssuer


class IssuerHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ext-authz-demo-issuer"
    sys_version = ""
    server: IssuerHTTPServer
    _ROUTES: ClassVar[tuple[str, ...]] = (".well-known/openid-configuration", "jwks.json", "token")

    def do_GET(self) -> None:
        issuer = self.server.issuer
        if issuer.outage:
            self._send_json(503, {"error": "temporarily_unavailable"})
            return
        url = urlsplit(self.path)
        name, _, rest = url.path.lstrip("/").partition("/")
        if rest not in self._ROUTES:
            self._send_json(404, {"error": "not_found"})
            return
        if name not in issuer.names:
            self._send_json(404, {"error": "unknown_issuer"})
            return
        if rest == "jwks.json":
            issuer.record_jwks_fetch(name)
            self._send_json(200, issuer.jwks(name), cache_control=JWKS_CACHE_CONTROL)
        elif rest == "token":
            try:
                ttl, claims = token_claims_from_query(parse_qs(url.query))
            except _BadQueryError as exc:
                self._send_json(400, {"error": "invalid_request", "error_description": str(exc)})
                return
            token = issuer.mint(name, ttl=ttl, **claims)
            self._send_json(
                200,
                {"access_token": token, "token_type": "Bearer", "expires_in": ttl},
                cache_control="no-store",
            )
        else:
            self._send_json(200, issuer.discovery(name), cache_control=JWKS_CACHE_CONTROL)

    def _method_not_allowed(self) -> None:
        self._send_json(405, {"error": "method_not_allowed"}, allow="GET")

    do_POST = do_PUT = do_DELETE = do_PATCH = _method_not_allowed

    def _send_json(
        self,
        status: int,
        document: Mapping[str, Any],
        *,
        cache_control: str | None = None,
        allow: str | None = None,
    ) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if cache_control is not None:
            self.send_header("Cache-Control", cache_control)
        if allow is not None:
            self.send_header("Allow", allow)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        _log.debug("%s - %s", self.address_string(), self.command)


def serve_issuer(
    host: str,
    port: int,
    names: Mapping[str, str] | Iterable[str] = DEFAULT_ISSUERS,
) -> tuple[ThreadingHTTPServer, DemoIssuer]:
    """Start the demo identity provider on ``host:port`` in a daemon thread.

    ``port`` may be 0. ``names`` maps issuer names to algorithms (a plain list of names
    uses ``corp``=RS256, ``partner``=ES256, anything else RS256). The issuer ids use the
    bound address: ``http://HOST:PORT/NAME``.
    """
    server = IssuerHTTPServer((host, port), IssuerHandler)
    try:
        bound_port = server.server_address[1]
        url_host = f"[{host}]" if ":" in host else host
        server.issuer = DemoIssuer(f"http://{url_host}:{bound_port}", names)
    except BaseException:
        server.server_close()
        raise
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.2},
        name=f"demo-issuer-{bound_port}",
        daemon=True,
    )
    thread.start()
    return server, server.issuer


def _issuer_arg(value: str) -> tuple[str, str]:
    name, sep, alg = value.partition("=")
    if not name or (sep and alg not in SUPPORTED_ALGORITHMS):
        raise argparse.ArgumentTypeError(
            f"expected NAME or NAME=ALG with ALG one of {', '.join(SUPPORTED_ALGORITHMS)}"
        )
    return name, alg or DEFAULT_ISSUERS.get(name, "RS256")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ext_authz.demo.issuer",
        description="Demo identity provider with in-memory keys (for demos and tests only).",
    )
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=parse_listen(DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help=f"address to listen on (default: {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--issuer",
        type=_issuer_arg,
        action="append",
        metavar="NAME[=ALG]",
        help="an issuer to serve (repeatable; default: corp=RS256 partner=ES256)",
    )
    args = parser.parse_args(argv)
    host, port = args.listen
    names = dict(args.issuer) if args.issuer else dict(DEFAULT_ISSUERS)
    try:
        server, issuer = serve_issuer(host, port, names)
    except OSError as exc:
        print(f"demo issuer: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    for name in issuer.names:
        print(
            f"issuer {name} ({issuer.algorithm(name)}): {issuer.issuer_id(name)}"
            f"  token: {issuer.token_url(name)}?scope=orders:read",
            flush=True,
        )
    try:
        wait_for_stop_signal()
    finally:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
