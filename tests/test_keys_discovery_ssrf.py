"""A remote issuer's discovery document cannot send key fetches to plain http, loopback
or private targets (the Envoy admin port, cloud metadata, internal services).

The remote issuer `https://idp.remote.test` cannot be reached from a test machine, so
one transport stands in for it: it answers that host's discovery document (and its
same-origin JWKS) itself, forwards requests for 127.0.0.1 to a real loopback server
over the real network stack, and refuses to connect anywhere else (recording the
attempt), so no test ever sends traffic off this machine.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ext_authz.keys.fetch import FetchedKeys, FetchError, FetchErrorKind, HttpJwksFetcher
from ext_authz.keys.urls import discovered_url_problem
from ext_authz.policy.loader import compile_policy_text
from ext_authz.policy.model import IssuerPolicy
from tests.support.jwks_server import JwksServer, jwks_server
from tests.support.tokens import CORP

REMOTE = "https://idp.remote.test"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class RemoteIssuer(httpx.AsyncBaseTransport):
    def __init__(self, jwks_uri: str) -> None:
        self.jwks_uri = jwks_uri
        self.real = httpx.AsyncHTTPTransport()
        self.refused: list[str] = []  # off-machine connections the fetcher attempted

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.host == "idp.remote.test":
            if url.path == "/.well-known/openid-configuration":
                document = {"issuer": REMOTE, "jwks_uri": self.jwks_uri}
                return _json_response(document)
            if url.path == "/keys":
                return _json_response(CORP.jwks())
            return httpx.Response(404, stream=httpx.ByteStream(b""))
        if url.host in LOOPBACK_HOSTS and url.scheme == "http":
            return await self.real.handle_async_request(request)
        self.refused.append(str(url))
        raise httpx.ConnectError("this test never connects off the machine", request=request)

    async def aclose(self) -> None:
        await self.real.aclose()


def _json_response(document: object) -> httpx.Response:
    body = json.dumps(document).encode()
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    return httpx.Response(200, headers=headers, stream=httpx.ByteStream(body))


def remote_issuer(tmp_path: Path, discovery_url: str = REMOTE) -> IssuerPolicy:
    text = (
        f"issuers:\n  corp:\n    issuer: {json.dumps(discovery_url)}\n    discovery: true\n"
        "    algorithms: [RS256]\n"
        "routes:\n  - name: api\n    match: { path_prefix: / }\n    require: {}\n"
    )
    return compile_policy_text(text, label="p.yaml", base_dir=tmp_path).issuers["corp"]


def fetch(issuer: IssuerPolicy, transport: httpx.AsyncBaseTransport) -> FetchedKeys | FetchError:
    async def run() -> FetchedKeys | FetchError:
        fetcher = HttpJwksFetcher(transport=transport)
        try:
            return await fetcher.fetch(issuer)
        except FetchError as exc:
            return exc
        finally:
            await fetcher.aclose()

    return asyncio.run(run())


@pytest.fixture
def loopback() -> Iterator[JwksServer]:
    with jwks_server(CORP.jwks()) as server:
        yield server


def _loopback_alias() -> str | None:
    """This machine's host name, when it resolves to a loopback address (Debian maps it
    to 127.0.1.1) and is not spelled like localhost."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, 443)}
    except OSError:
        return None
    if not addresses or not all(str(a).startswith("127.") for a in addresses):
        return None
    return name


def test_a_remote_issuer_cannot_point_key_fetches_at_a_loopback_http_port(
    tmp_path: Path, loopback: JwksServer
) -> None:
    transport = RemoteIssuer(loopback.jwks_uri)  # http://127.0.0.1:<port>/jwks.json
    result = fetch(remote_issuer(tmp_path), transport)
    assert isinstance(result, FetchError)
    assert result.kind is FetchErrorKind.DISCOVERY
    assert "must use https" in str(result)
    assert loopback.count() == 0  # no request reached the loopback service
    assert transport.refused == []


@pytest.mark.parametrize(
    "target",
    [
        "https://127.0.0.1:9901/jwks.json",
        "https://localhost/jwks.json",
        "https://keys.localhost/jwks.json",
        "https://[::1]/jwks.json",
        "https://[::ffff:127.0.0.1]/jwks.json",
        "https://10.0.0.7/jwks.json",
        "https://192.168.1.1/jwks.json",
        "https://169.254.169.254/latest/meta-data",
        "https://[fd00::1]/jwks.json",
        "https://0.0.0.0/jwks.json",
        "https://100.64.0.1/jwks.json",
    ],
)
def test_a_remote_issuer_cannot_point_key_fetches_at_non_public_addresses(
    tmp_path: Path, target: str
) -> None:
    transport = RemoteIssuer(target)
    result = fetch(remote_issuer(tmp_path), transport)
    assert isinstance(result, FetchError)
    assert result.kind is FetchErrorKind.DISCOVERY
    assert "loopback, private or link-local" in str(result)
    assert transport.refused == []  # refused before any connection


def test_a_host_name_resolving_to_loopback_is_refused(tmp_path: Path) -> None:
    alias = _loopback_alias()
    if alias is None:
        pytest.skip("this machine's host name does not resolve to a loopback address")
    transport = RemoteIssuer(f"https://{alias}/jwks.json")
    result = fetch(remote_issuer(tmp_path), transport)
    assert isinstance(result, FetchError)
    assert str(result) == (
        "discovered jwks_uri resolves to a loopback, private or link-local address"
    )
    assert transport.refused == []


def test_a_same_origin_jwks_uri_of_a_remote_issuer_is_fetched(tmp_path: Path) -> None:
    transport = RemoteIssuer(f"{REMOTE}/keys")
    result = fetch(remote_issuer(tmp_path), transport)
    assert not isinstance(result, FetchError), result
    assert result.url == f"{REMOTE}/keys"
    assert result.parsed.keys.kids() == [CORP.kid]


def test_a_public_address_of_another_origin_is_allowed(tmp_path: Path) -> None:
    transport = RemoteIssuer("https://203.0.114.9/keys")  # a public address
    result = fetch(remote_issuer(tmp_path), transport)
    # allowed by the rule; the stand-in transport refuses to leave the machine
    assert isinstance(result, FetchError)
    assert result.kind is FetchErrorKind.NETWORK
    assert transport.refused == ["https://203.0.114.9/keys"]


def test_a_loopback_issuer_may_name_loopback_http(tmp_path: Path, loopback: JwksServer) -> None:
    issuer = remote_issuer(tmp_path, loopback.base_url)
    loopback.behaviour.issuer = loopback.base_url
    result = fetch(issuer, httpx.AsyncHTTPTransport())
    assert not isinstance(result, FetchError), result
    assert loopback.count() == 1


@pytest.mark.parametrize(
    ("configured", "discovered", "allowed"),
    [
        ("https://idp.example", "https://idp.example/keys", True),
        ("https://idp.example", "https://idp.example:443/keys", True),
        ("https://idp.example", "https://keys.example/jwks", True),
        ("https://idp.example", "http://keys.example/jwks", False),
        ("https://idp.example", "https://idp.example:9901/keys", True),
        ("https://10.1.2.3", "https://10.1.2.3/keys", True),  # the configured host itself
        ("https://idp.example", "https://10.1.2.3/keys", False),
        ("http://127.0.0.1:8080", "http://127.0.0.1:9000/keys", True),
        ("http://localhost:8080", "http://10.0.0.1/keys", True),  # loopback issuer: trusted
    ],
)
def test_discovered_url_rule(configured: str, discovered: str, allowed: bool) -> None:
    assert (discovered_url_problem(configured, discovered) is None) is allowed
