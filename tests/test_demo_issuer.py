"""The demo identity provider, checked over HTTP and with PyJWT (an independent verifier)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from ext_authz.demo.issuer import DemoIssuer, serve_issuer

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[str, DemoIssuer]]:
    server, issuer = serve_issuer("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", issuer
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=5.0) as client:
        yield client


def _verify(http: httpx.Client, base: str, name: str, token: str, **options: Any) -> Any:
    discovery = http.get(f"{base}/{name}/.well-known/openid-configuration").json()
    jwks = jwt.PyJWKSet.from_dict(http.get(discovery["jwks_uri"]).json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    return jwt.decode(
        token,
        key=key,
        algorithms=[key.algorithm_name],
        issuer=discovery["issuer"],
        audience=options.pop("audience", "orders-api"),
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
        **options,
    )


@pytest.mark.parametrize(
    ("name", "kty", "alg"), [("corp", "RSA", "RS256"), ("partner", "EC", "ES256")]
)
def test_discovery_and_public_jwks(
    demo: tuple[str, DemoIssuer], http: httpx.Client, name: str, kty: str, alg: str
) -> None:
    base, issuer = demo
    response = http.get(f"{base}/{name}/.well-known/openid-configuration")
    assert response.status_code == 200
    document = response.json()
    assert document["issuer"] == f"{base}/{name}" == issuer.issuer_id(name)
    assert document["jwks_uri"] == f"{base}/{name}/jwks.json"

    jwks_response = http.get(document["jwks_uri"])
    assert jwks_response.status_code == 200
    assert jwks_response.headers["cache-control"] == "max-age=300"
    assert jwks_response.headers["content-type"] == "application/json"
    keys = jwks_response.json()["keys"]
    assert keys == issuer.jwks(name)["keys"]
    assert len(keys) == 1
    (key,) = keys
    assert key["kty"] == kty
    assert key["alg"] == alg
    assert key["use"] == "sig"
    assert key["kid"] == issuer.current_kid(name)
    assert not PRIVATE_MEMBERS & set(key)


def test_token_endpoint_defaults(demo: tuple[str, DemoIssuer], http: httpx.Client) -> None:
    base, _ = demo
    before = int(time.time())
    response = http.get(f"{base}/corp/token")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "RS256"
    claims = _verify(http, base, "corp", body["access_token"])
    assert claims["iss"] == f"{base}/corp"
    assert claims["sub"] == "demo-user"
    assert claims["aud"] == "orders-api"
    assert claims["scope"] == "orders:read"
    assert claims["email_verified"] is True
    assert before <= claims["iat"] == claims["nbf"] <= int(time.time())
    assert claims["exp"] == claims["iat"] + 600


def test_token_endpoint_carries_requested_claims(
    demo: tuple[str, DemoIssuer], http: httpx.Client
) -> None:
    base, _ = demo
    params = {
        "sub": "alice",
        "scope": "orders:read orders:write",
        "aud": "billing-api",
        "ttl": "120",
        "email": "alice@corp.example",
        "email_verified": "false",
        "tenant": "initech",
    }
    body = http.get(f"{base}/partner/token", params=params).json()
    assert body["expires_in"] == 120
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "ES256"
    claims = _verify(http, base, "partner", body["access_token"], audience="billing-api")
    assert claims["iss"] == f"{base}/partner"
    assert claims["sub"] == "alice"
    assert claims["scope"] == "orders:read orders:write"
    assert claims["email"] == "alice@corp.example"
    assert claims["email_verified"] is False
    assert claims["org"] == {"tenant": "initech"}
    assert claims["exp"] - claims["iat"] == 120


def test_tokens_have_distinct_jti(demo: tuple[str, DemoIssuer], http: httpx.Client) -> None:
    base, _ = demo
    tokens = [http.get(f"{base}/corp/token").json()["access_token"] for _ in range(3)]
    jtis = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in tokens}
    assert len(jtis) == 3


def test_mint_api_overrides_and_drops_claims(
    demo: tuple[str, DemoIssuer], http: httpx.Client
) -> None:
    base, issuer = demo
    token = issuer.mint("corp", sub="svc", aud=["orders-api", "other"], scope=None, role="admin")
    claims = _verify(http, base, "corp", token)
    assert claims["sub"] == "svc"
    assert claims["aud"] == ["orders-api", "other"]
    assert claims["role"] == "admin"
    assert "scope" not in claims

    expired = issuer.mint("corp", ttl=-120, now=int(time.time()) - 60)
    with pytest.raises(jwt.ExpiredSignatureError):
        _verify(http, base, "corp", expired)


def test_a_token_does_not_verify_with_the_other_issuers_keys(
    demo: tuple[str, DemoIssuer], http: httpx.Client
) -> None:
    base, issuer = demo
    token = issuer.mint("corp")
    partner_keys = jwt.PyJWKSet.from_dict(http.get(f"{base}/partner/jwks.json").json())
    (partner_key,) = partner_keys.keys
    with pytest.raises(jwt.InvalidTokenError):
        jwt.decode(token, key=partner_key, algorithms=["RS256", "ES256"], audience="orders-api")


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/nobody/jwks.json", 404, "unknown_issuer"),
        ("/nobody/.well-known/openid-configuration", 404, "unknown_issuer"),
        ("/nobody/token", 404, "unknown_issuer"),
        ("/corp/private.json", 404, "not_found"),
        ("/", 404, "not_found"),
        ("/corp/token?ttl=soon", 400, "invalid_request"),
        ("/corp/token?email_verified=maybe", 400, "invalid_request"),
    ],
)
def test_bad_requests_get_json_errors(
    demo: tuple[str, DemoIssuer], http: httpx.Client, path: str, status: int, error: str
) -> None:
    base, _ = demo
    response = http.get(f"{base}{path}")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == error


def test_rotation_and_outage() -> None:
    server, issuer = serve_issuer("127.0.0.1", 0, names=["corp"])
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with httpx.Client(trust_env=False, timeout=5.0) as http:
            old_kid = issuer.current_kid("corp")
            new_kid = issuer.rotate("corp")
            kids = [k["kid"] for k in http.get(f"{base}/corp/jwks.json").json()["keys"]]
            assert kids == [old_kid, new_kid]
            token = issuer.mint("corp")
            assert jwt.get_unverified_header(token)["kid"] == new_kid
            _verify(http, base, "corp", token)
            fetches = issuer.jwks_fetches("corp")

            issuer.set_outage(True)
            assert http.get(f"{base}/corp/jwks.json").status_code == 503
            assert issuer.jwks_fetches("corp") == fetches
            issuer.set_outage(False)
            assert http.get(f"{base}/corp/jwks.json").status_code == 200
            assert issuer.jwks_fetches("corp") == fetches + 1
    finally:
        server.shutdown()
        server.server_close()


def test_repr_shows_no_key_material(demo: tuple[str, DemoIssuer]) -> None:
    _, issuer = demo
    text = repr(issuer)
    assert "corp" in text
    assert "RSAKey" not in text
    assert "ECKey" not in text
