"""Every supported key management and content encryption pair, end to end: nested JWE
tokens minted by jwcrypto go through a real Envoy to the server, and the upstream sees
the inner token's claims as headers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from ext_authz.demo.upstream import serve_upstream
from ext_authz.deploy.envoy_config import EnvoyParams
from tests.support.jwe_tokens import (
    CONTENT_ENCRYPTIONS,
    ECDH_ALGORITHMS,
    ECDH_KEYS,
    KW128,
    KW256,
    POLICY_KEYS,
    RSA_ENC,
    DecryptionTestKey,
    decryption_yaml,
    dir_key,
    encrypt_nested,
    write_decryption_jwks,
)
from tests.support.jwks_server import jwks_server
from tests.support.processes import free_port, running, start_envoy, wait_for_grpc_serving
from tests.support.tokens import CORP, EDGE, PARTNER
from tests.support.tokens import mint_live as mint

pytestmark = pytest.mark.e2e


def _pairs() -> list[tuple[str, DecryptionTestKey, str]]:
    pairs: list[tuple[str, DecryptionTestKey, str]] = []
    for enc in CONTENT_ENCRYPTIONS:
        pairs += [("RSA-OAEP", RSA_ENC, enc), ("RSA-OAEP-256", RSA_ENC, enc)]
        pairs += [(alg, key, enc) for alg in ECDH_ALGORITHMS for key in ECDH_KEYS]
        pairs += [("A128KW", KW128, enc), ("A256KW", KW256, enc), ("dir", dir_key(enc), enc)]
    return pairs


PAIRS = _pairs()


@dataclass
class Stack:
    url: str
    client: httpx.Client


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e-jwe-matrix")
    write_decryption_jwks(tmp / "keys" / "decrypt.jwks.json", *POLICY_KEYS)
    upstream = serve_upstream("127.0.0.1", 0)
    try:
        with jwks_server({"keys": [i.public_jwk() for i in (CORP, PARTNER, EDGE)]}) as idp:
            issuers = "".join(
                f'  {i.name}:\n    issuer: "{i.iss}"\n    jwks_uri: {idp.jwks_uri}\n'
                f"    audiences: [orders-api]\n    algorithms: [{i.alg}]\n"
                for i in (CORP, PARTNER, EDGE)
            )
            policy = tmp / "policy.yaml"
            policy.write_text(
                "issuers:\n"
                + issuers
                + decryption_yaml(jwks_file="keys/decrypt.jwks.json")
                + "routes:\n  - name: records\n    match: { path_prefix: / }\n"
                "    require: { encrypted: true, scopes: [orders:read] }\n"
                "    headers: { x-user-id: sub, x-tenant-id: org.tenant }\n",
                encoding="utf-8",
            )
            port = free_port()
            cmd = [sys.executable, "-m", "ext_authz", "serve", "--config", str(policy)]
            cmd += ["--listen", f"127.0.0.1:{port}", "--shutdown-delay", "0"]
            with running(cmd, name="ext-authz") as server:
                assert wait_for_grpc_serving("127.0.0.1", port, 30, server)
                params = EnvoyParams(
                    listen_port=free_port(),
                    admin_port=free_port(),
                    ext_authz_port=port,
                    upstream_port=upstream.server_address[1],
                )
                with start_envoy(params, tmp) as envoy, httpx.Client(trust_env=False) as client:
                    yield Stack(envoy.base_url, client)
    finally:
        upstream.shutdown()
        upstream.server_close()


@pytest.mark.parametrize(
    ("alg", "key", "enc"),
    [pytest.param(a, k, e, id=f"{a}-{k.name}-{e}") for a, k, e in PAIRS],
)
def test_nested_jwe_through_envoy(stack: Stack, alg: str, key: DecryptionTestKey, enc: str) -> None:
    issuer = (CORP, PARTNER, EDGE)[PAIRS.index((alg, key, enc)) % 3]
    inner = mint(issuer, sub=f"{alg}/{enc}")
    token = encrypt_nested(inner, key.public_jwk(), alg, enc)
    response = stack.client.get(
        f"{stack.url}/records", headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    headers = response.json()["headers"]
    assert headers["x-user-id"] == f"{alg}/{enc}"
    assert headers["x-tenant-id"] == f"tenant-{issuer.name}"


def test_the_inner_token_alone_is_refused_on_an_encrypted_route(stack: Stack) -> None:
    response = stack.client.get(
        f"{stack.url}/records", headers={"authorization": f"Bearer {mint(CORP)}"}
    )
    assert response.status_code == 401


def test_matrix_covers_every_supported_pair() -> None:
    from ext_authz.policy.schema import CONTENT_ENCRYPTIONS as ENCS
    from ext_authz.policy.schema import KEY_MANAGEMENT_ALGORITHMS as ALGS

    assert {(a, e) for a, _, e in PAIRS} == {(a, e) for a in ALGS for e in ENCS}
