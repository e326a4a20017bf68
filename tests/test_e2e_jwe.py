"""End to end with encrypted tokens: nested JWE (minted by jwcrypto, an implementation
independent of the server's) through a real Envoy, claims mapped to upstream headers."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from jwcrypto import jwe, jwk

from ext_authz.demo.upstream import serve_upstream
from ext_authz.deploy.envoy_config import EnvoyParams
from ext_authz.keys.generate import generate
from tests.support.jwks_server import jwks_server
from tests.support.processes import free_port, running, start_envoy, wait_for_grpc_serving
from tests.support.tokens import CORP
from tests.support.tokens import mint_live as mint

pytestmark = pytest.mark.e2e


@dataclass
class JweStack:
    url: str
    public_keys: dict[str, Any]
    client: httpx.Client


def encrypt(inner: str, public: dict[str, Any], alg: str, enc: str = "A256GCM") -> str:
    header = {"alg": alg, "enc": enc, "kid": public["kid"], "cty": "JWT"}
    token = jwe.JWE(inner.encode(), json.dumps(header))
    token.add_recipient(jwk.JWK(**public))
    return str(token.serialize(compact=True))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JweStack]:
    tmp = tmp_path_factory.mktemp("e2e-jwe")
    keys_file = tmp / "keys" / "decrypt.jwks.json"
    generate(keys_file, "RSA-OAEP-256", kid="rsa-1")
    public = generate(keys_file, "ECDH-ES+A256KW", kid="ec-1", append=True)
    by_kid = {key["kid"]: key for key in public["keys"]}
    upstream = serve_upstream("127.0.0.1", 0)
    try:
        with jwks_server(CORP.jwks()) as corp:
            policy = tmp / "policy.yaml"
            policy.write_text(
                f"""\
issuers:
  corp:
    issuer: "{CORP.iss}"
    jwks_uri: {corp.jwks_uri}
    audiences: [orders-api]
    algorithms: [RS256]
    require_encryption: true
decryption:
  jwks_file: keys/decrypt.jwks.json
  algorithms: [RSA-OAEP-256, ECDH-ES+A256KW]
  encryptions: [A256GCM, A128CBC-HS256]
routes:
  - name: records
    match: {{ path_prefix: /records }}
    require: {{ scopes: [orders:read] }}
    headers: {{ x-user-id: sub, x-tenant-id: org.tenant }}
""",
                encoding="utf-8",
            )
            port = free_port()
            cmd = [sys.executable, "-m", "ext_authz", "serve", "--config", str(policy)]
            cmd += ["--shutdown-delay", "0"]
            with running([*cmd, "--listen", f"127.0.0.1:{port}"], name="ext-authz") as server:
                assert wait_for_grpc_serving("127.0.0.1", port, 30, server)
                params = EnvoyParams(
                    listen_port=free_port(),
                    admin_port=free_port(),
                    ext_authz_port=port,
                    upstream_port=upstream.server_address[1],
                )
                with start_envoy(params, tmp) as envoy, httpx.Client(trust_env=False) as client:
                    yield JweStack(envoy.base_url, by_kid, client)
    finally:
        upstream.shutdown()
        upstream.server_close()


def get(stack: JweStack, token: str) -> httpx.Response:
    return stack.client.get(f"{stack.url}/records/1", headers={"authorization": f"Bearer {token}"})


@pytest.mark.parametrize(
    ("kid", "alg", "enc"),
    [
        ("rsa-1", "RSA-OAEP-256", "A256GCM"),
        ("ec-1", "ECDH-ES+A256KW", "A256GCM"),
        ("ec-1", "ECDH-ES+A256KW", "A128CBC-HS256"),
    ],
)
def test_nested_jwe_allowed_with_inner_claims_as_headers(
    stack: JweStack, kid: str, alg: str, enc: str
) -> None:
    token = encrypt(mint(CORP, sub="enc-user"), stack.public_keys[kid], alg, enc)
    response = get(stack, token)
    assert response.status_code == 200, response.text
    headers = response.json()["headers"]
    assert headers["x-user-id"] == "enc-user"
    assert headers["x-tenant-id"] == "tenant-corp"


def test_signed_only_token_refused_when_issuer_requires_encryption(stack: JweStack) -> None:
    response = get(stack, mint(CORP))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_bare_claims_encrypted_to_our_public_key_refused(stack: JweStack) -> None:
    claims = json.loads(
        json.dumps({"iss": CORP.iss, "sub": "forged", "aud": "orders-api", "exp": 4_000_000_000})
    )
    header = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "rsa-1"}
    token = jwe.JWE(json.dumps(claims).encode(), json.dumps(header))
    token.add_recipient(jwk.JWK(**stack.public_keys["rsa-1"]))
    response = get(stack, str(token.serialize(compact=True)))
    assert response.status_code == 401


def test_inner_token_with_bad_signature_refused(stack: JweStack) -> None:
    from tests.support.tokens import ROGUE_RSA

    inner = mint(CORP, key=ROGUE_RSA)
    response = get(stack, encrypt(inner, stack.public_keys["rsa-1"], "RSA-OAEP-256"))
    assert response.status_code == 401


def test_decryption_failures_look_the_same(stack: JweStack) -> None:
    good = encrypt(mint(CORP), stack.public_keys["rsa-1"], "RSA-OAEP-256")
    parts = good.split(".")
    flipped_tag = parts[4][:-2] + ("AA" if parts[4][-2:] != "AA" else "BA")
    bad_tag = ".".join([*parts[:4], flipped_tag])
    bad_key = ".".join([parts[0], parts[1][:-4] + "AAAA", *parts[2:]])
    responses = [get(stack, token) for token in (bad_tag, bad_key)]
    assert {r.status_code for r in responses} == {401}
    assert len({r.text for r in responses}) == 1
    assert len({r.headers["www-authenticate"] for r in responses}) == 1


def test_keys_public_command_prints_no_private_members(tmp_path: Path) -> None:
    import subprocess

    out = tmp_path / "k.json"
    generate(out, "RSA-OAEP-256", kid="k1")
    result = subprocess.run(
        [sys.executable, "-m", "ext_authz", "keys", "public", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    public = json.loads(result.stdout)
    assert public["keys"][0]["kid"] == "k1"
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(public["keys"][0])
    assert out.stat().st_mode & 0o077 == 0
