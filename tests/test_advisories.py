"""One regression test per published attack on JWT/JOSE implementations (the BRIEF's
token attack checklist), each driving a full `Check` through the gRPC servicer.

Every test asserts what the client gets (the HTTP status of the denied response) and
what the operator gets (the decision log's `reason`). Where the JOSE library we build
on (joserfc) would accept the attack on its own, a `test_library_gap_*` test calls it
directly to show that, then shows our own checks refusing the same token.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import re
import time
import uuid
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from joserfc import jwe as joserfc_jwe
from joserfc import jws as joserfc_jws
from joserfc import jwt as joserfc_jwt
from joserfc.errors import SecurityWarning
from joserfc.jwe import JWERegistry
from joserfc.jwk import ECKey, OctKey, RSAKey
from joserfc.jws import JWSRegistry
from jwcrypto import jwk as jwcrypto_jwk

from ext_authz.errors import DenialReason, Denied
from ext_authz.keys.bucket import REFETCH_BURST
from ext_authz.keys.decryption_keys import parse_decryption_jwks
from ext_authz.keys.jwks import parse_jwks
from ext_authz.keys.manager import KeyManager
from ext_authz.policy.loader import PolicyError, compile_policy_text
from ext_authz.policy.model import Policy
from ext_authz.tokens.decrypt import DecryptionConfig
from ext_authz.tokens.format import MAX_HEADER_BYTES, MAX_TOKEN_BYTES, parse_signed
from ext_authz.tokens.verify import verify_signature
from tests.support.checks import (
    DecisionLog,
    Outcome,
    RecordingKeys,
    audit_watch,
    check_request,
)
from tests.support.doubles import FixedClock
from tests.support.jwks_server import jwks_server
from tests.support.service import (
    ENC_EC,
    ENC_RSA,
    OPEN,
    OPEN_EC_KEY,
    OPEN_EC_KID,
    OTHER,
    SHARED_CORP,
    Stack,
    encrypt,
    make_stack,
    nested,
    public_of,
)
from tests.support.tokens import (
    AUDIENCE,
    CORP,
    DEFAULT_ROUTES,
    NOW,
    PARTNER,
    ROGUE_RSA,
    PrivateKey,
    b64json,
    b64url,
    good_claims,
    mint,
    public_jwk,
    rsa_key,
    unsigned,
)

R = DenialReason
ROUTES = """\
routes:
  - name: read-orders
    match: { path_prefix: /api/orders }
    require: { scopes: ["orders:read"] }
"""
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.fixture
def stack() -> Stack:
    return make_stack()


def denied(outcome: Outcome, status: int, reason: DenialReason, detail: str | None = None) -> None:
    assert not outcome.allowed, outcome
    assert (outcome.status, outcome.reason) == (status, reason.value), outcome
    if detail is not None:
        assert outcome.detail == detail, outcome
    if status == 401 and reason is not R.TOKEN_MISSING:
        assert outcome.www_authenticate is not None
        assert 'error="invalid_token"' in outcome.www_authenticate


def sign(header: bytes, payload: bytes, key: Any = None, alg: str = "RS256") -> str:
    """A JWS over exactly these header and payload bytes, signed by PyJWT's algorithm
    code (not the server's library); for shapes no encoder will produce."""
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    algorithm = jwt.get_algorithm_by_name(alg)
    signature = algorithm.sign(signing_input.encode(), key if key is not None else CORP.key)
    return f"{signing_input}.{b64url(signature)}"


def claims_bytes(issuer: Any = CORP, **overrides: Any) -> bytes:
    return json.dumps(good_claims(issuer) | overrides).encode()


def with_header(token: str, header: dict[str, Any]) -> str:
    """`token` (JWS or JWE) under another protected header."""
    return ".".join([b64json(header), *token.split(".")[1:]])


def header_of(token: str) -> dict[str, Any]:
    segment = token.split(".", 1)[0]
    value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    assert isinstance(value, dict)
    return value


def segments(token: str) -> list[bytes]:
    return [base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)) for s in token.split(".")]


def with_segment(token: str, index: int, data: bytes) -> str:
    parts = token.split(".")
    parts[index] = b64url(data)
    return ".".join(parts)


# algorithms ------------------------------------------------------------------------


def test_cve_2022_23540_jsonwebtoken_alg_none(stack: Stack) -> None:
    """jsonwebtoken <= 8.5.1 verified `alg: none` tokens when no algorithm was given."""
    for alg in ("none", "None", "NONE", "nOnE"):
        for signature in (b"", b"\x00" * 32):
            token = unsigned({"alg": alg, "kid": CORP.kid}, good_claims(CORP), signature)
            denied(stack.check(token=token), 401, R.ALGORITHM_NOT_ALLOWED)
    # an issuer with no allow-list (every asymmetric algorithm) refuses it just the same
    token = unsigned({"alg": "none"}, good_claims(OPEN))
    denied(stack.check(token=token), 401, R.ALGORITHM_NOT_ALLOWED)
    # a policy cannot list it
    jwks = json.dumps(CORP.jwks())
    text = f"issuers:\n  x:\n    issuer: x\n    algorithms: [none]\n    jwks: {jwks}\n"
    with pytest.raises(PolicyError) as refused_policy:
        compile_policy_text(text + ROUTES, label="p", base_dir=Path.cwd())
    assert [p.field for p in refused_policy.value.problems] == ["issuers.x.algorithms[0]"]
    # and were a token to get that far, there is no `none` to verify with
    key = stack.policy.issuers["corp"].source.static_keys
    assert key is not None
    with pytest.raises(Denied) as refused:
        verify_signature(parse_signed(token), key.verification_keys[0])
    assert refused.value.reason is R.KEY_MISMATCH


def test_library_gap_joserfc_accepts_alg_none_when_listed(stack: Stack) -> None:
    token = unsigned({"alg": "none"}, good_claims(CORP))
    with pytest.warns(SecurityWarning):
        result = joserfc_jws.deserialize_compact(
            token, OctKey.import_key(b"k" * 32), algorithms=["none"]
        )
    assert json.loads(result.payload)["sub"] == "user-of-corp"
    assert "none" in JWSRegistry.algorithms
    denied(stack.check(token=token), 401, R.ALGORITHM_NOT_ALLOWED)


def _public_key_forms(key: PrivateKey) -> dict[str, bytes]:
    public = key.public_key()
    forms = {
        "pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "der": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "openssh": public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
        "jwk": json.dumps(public_jwk(key, kid=None)).encode(),
    }
    if isinstance(public, rsa.RSAPublicKey):
        n = public.public_numbers().n
        forms["modulus"] = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return forms


def _hmac_token(secret: bytes, claims: dict[str, Any], kid: str | None, alg: str) -> str:
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    mac = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(mac)}"


def test_cve_2022_29217_pyjwt_alg_confusion_hs256_with_rsa_public_key(stack: Stack) -> None:
    """RS/HS confusion (also CVE-2015-9235, jsonwebtoken): an HMAC keyed with the
    issuer's public RSA key, in any of its published forms."""
    for form, secret in _public_key_forms(CORP.key).items():
        for alg in ("HS256", "HS384", "HS512"):
            for kid in (CORP.kid, None):
                token = _hmac_token(secret, good_claims(CORP), kid, alg)
                outcome = stack.check(token=token)
                assert outcome.reason == R.ALGORITHM_NOT_ALLOWED.value, (form, alg, kid)
                denied(outcome, 401, R.ALGORITHM_NOT_ALLOWED)
    # the issuer without an allow-list: HS* is not an asymmetric algorithm either
    for secret in _public_key_forms(OPEN.key).values():
        token = _hmac_token(secret, good_claims(OPEN), OPEN.kid, "HS256")
        denied(stack.check(token=token), 401, R.ALGORITHM_NOT_ALLOWED)


def test_cve_2024_33663_python_jose_ec_key_confusion(stack: Stack) -> None:
    """python-jose <= 3.3.0 let an EC public key (OpenSSH ECDSA and other formats)
    serve as an HMAC secret."""
    for secret in _public_key_forms(PARTNER.key).values():
        token = _hmac_token(secret, good_claims(PARTNER), PARTNER.kid, "HS256")
        denied(stack.check(token=token), 401, R.ALGORITHM_NOT_ALLOWED)
    for secret in _public_key_forms(OPEN_EC_KEY).values():
        token = _hmac_token(secret, good_claims(OPEN), OPEN_EC_KID, "HS256")
        denied(stack.check(token=token), 401, R.ALGORITHM_NOT_ALLOWED)


def test_header_alg_different_from_the_keys_alg(stack: Stack) -> None:
    """`open` allows every asymmetric algorithm, so only the key's own binding (its
    `alg`, its type and curve) stands between a token's `alg` and the key."""
    p384 = ec.generate_private_key(ec.SECP384R1())
    cases = {
        "PS256 under an RS256-bound RSA key": mint(OPEN, alg="PS256"),
        "RS256 under an EC key": mint(OPEN, headers={"kid": OPEN_EC_KID}),
        "ES384 under a P-256 key": mint(OPEN, key=p384, alg="ES384", headers={"kid": OPEN_EC_KID}),
        "ES256 under an RSA key": mint(OPEN, key=OPEN_EC_KEY, alg="ES256"),
    }
    for name, token in cases.items():
        outcome = stack.check(token=token)
        assert outcome.reason == R.KEY_MISMATCH.value, name
        denied(outcome, 401, R.KEY_MISMATCH)
    # without a kid, no key fits PS256 at all
    denied(stack.check(token=mint(OPEN, alg="PS256", headers={"kid": None})), 401, R.KEY_UNKNOWN)
    # the fitting pairs do verify
    assert stack.check(token=mint(OPEN)).status == 200
    good_ec = mint(OPEN, key=OPEN_EC_KEY, alg="ES256", headers={"kid": OPEN_EC_KID})
    assert stack.check(token=good_ec).status == 200


def _ecdsa_parts(token: str) -> tuple[str, int, int]:
    signing_input, signature = token.rsplit(".", 1)
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return signing_input, int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")


def test_cve_2022_21449_psychic_signatures_ecdsa_r_s_zero_or_n(stack: Stack) -> None:
    """Java 15-18 accepted ECDSA signatures with r = s = 0; also r or s = n, and
    signatures that are too long, too short or DER-encoded (JOSE uses raw r || s)."""
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    signing_input, r, s = _ecdsa_parts(mint(PARTNER))
    n = P256_ORDER

    def raw(r_value: int, s_value: int, size: int = 32) -> bytes:
        return r_value.to_bytes(size, "big") + s_value.to_bytes(size, "big")

    valid = raw(r, s)
    forged = {
        "r=0,s=0": raw(0, 0),
        "r=0,s=1": raw(0, 1),
        "r=1,s=0": raw(1, 0),
        "r=0,s=s": raw(0, s),
        "r=r,s=0": raw(r, 0),
        "r=n,s=n": raw(n, n),
        "r=r,s=n": raw(r, n),
        "r=n,s=s": raw(n, s),
        "r=r+n (33 bytes each)": raw(r + n, s, 33),
        "valid plus a zero byte": valid + b"\x00",
        "valid twice": valid * 2,
        "zero-padded to 66 bytes": raw(r, s, 33),
        "truncated": valid[:63],
        "DER-encoded": encode_dss_signature(r, s),
    }
    for name, signature in forged.items():
        outcome = stack.check(token=f"{signing_input}.{b64url(signature)}")
        assert outcome.reason == R.SIGNATURE_INVALID.value, name
        denied(outcome, 401, R.SIGNATURE_INVALID)
    assert stack.check(token=f"{signing_input}.{b64url(valid)}").status == 200


# keys in the header and key lookup -----------------------------------------------------


def _self_signed(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "login.corp.test")])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=36500))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER)


def test_cve_2018_0114_node_jose_embedded_jwk_is_never_used(stack: Stack) -> None:
    """node-jose < 0.11.0 verified with the key embedded in the token's `jwk` header."""
    rogue = public_jwk(ROGUE_RSA, kid=CORP.kid, alg="RS256")
    with_kid = mint(CORP, key=ROGUE_RSA, headers={"jwk": rogue})
    without_kid = mint(CORP, key=ROGUE_RSA, headers={"kid": None, "jwk": rogue})
    for token in (with_kid, without_kid):
        denied(stack.check(token=token), 401, R.SIGNATURE_INVALID)
    assert stack.recorded.issuers_asked() == {"corp"}


def test_jku_x5u_x5c_are_never_fetched_or_used(stack: Stack) -> None:
    """Keys referenced by URL (`jku`, `x5u`) or carried as certificates (`x5c`): the
    attacker's server sees no request, and the token is checked with corp's key only."""
    certificate = base64.b64encode(_self_signed(ROGUE_RSA)).decode()
    with jwks_server({"keys": [public_jwk(ROGUE_RSA, kid="rogue")]}) as evil, audit_watch() as w:
        headers: list[dict[str, Any]] = [
            {"jku": evil.jwks_uri},
            {"jku": evil.jwks_uri, "kid": "rogue"},
            {"x5u": f"{evil.base_url}/cert.pem"},
            {"x5c": [certificate]},
            {"x5c": [certificate], "kid": None},
            {"jku": evil.jwks_uri, "x5u": evil.jwks_uri, "x5c": [certificate], "kid": None},
        ]
        for header in headers:
            outcome = stack.check(token=mint(CORP, key=ROGUE_RSA, headers=header))
            expected = R.KEY_UNKNOWN if header.get("kid") == "rogue" else R.SIGNATURE_INVALID
            denied(outcome, 401, expected)
        assert sum(evil.behaviour.requests.values()) == 0
        assert w.connections() == []
        assert w.urls() == []
    assert stack.recorded.issuers_asked() == {"corp"}
    assert stack.recorded.refetches() == []


def test_jku_with_unknown_kid_refetches_only_the_configured_jwks_uri(tmp_path: Path) -> None:
    """A remote issuer refetches its own configured key set on an unknown kid, never
    the URL the token names."""
    policy = _remote_policy(tmp_path, corp_uri="http://127.0.0.1:9/jwks.json")
    keys = RecordingKeys({"corp": parse_jwks(CORP.jwks()).key_set})
    stack = make_stack(policy, keys)
    with jwks_server({"keys": [public_jwk(ROGUE_RSA, kid="rogue")]}) as evil:
        header = {"kid": "rogue", "jku": evil.jwks_uri, "x5u": evil.jwks_uri}
        denied(stack.check(token=mint(CORP, key=ROGUE_RSA, headers=header)), 401, R.KEY_UNKNOWN)
        assert sum(evil.behaviour.requests.values()) == 0
    assert keys.calls == [("current", "corp"), ("refetch", "corp")]


ODD_KIDS = {
    "path traversal": "../../etc/passwd",
    "absolute path": "/etc/passwd",
    "file url": "file:///etc/passwd",
    "sql injection": "' OR '1'='1' --",
    "sql union": "x' UNION SELECT key FROM keys --",
    "url": "https://evil.test/jwks.json",
    "nul byte": "corp-1\x00",
    "crlf": "corp-1\r\nx-injected: yes",
    "unicode lookalike": "corp\u20111",
    "corp kid with a space": f"{CORP.kid} ",
    "300 characters": "k" * 300,
}


def test_odd_kid_values_are_only_an_unknown_key(stack: Stack) -> None:
    """A kid is a dictionary key among corp's keys: never a path, a query or a URL."""
    with audit_watch() as watch:
        for name, kid in ODD_KIDS.items():
            outcome = stack.check(token=mint(CORP, headers={"kid": kid}))
            assert outcome.reason == R.KEY_UNKNOWN.value, name
            denied(outcome, 401, R.KEY_UNKNOWN, detail="no key with this kid")
    assert not [path for path in watch.opened() if "passwd" in path]
    assert watch.connections() == []
    assert stack.recorded.issuers_asked() == {"corp"}
    assert stack.recorded.refetches() == []


def test_ten_kilobyte_kid_is_refused_with_the_header_before_any_key_lookup(stack: Stack) -> None:
    token = mint(CORP, headers={"kid": "k" * 10_000})
    denied(stack.check(token=token), 401, R.TOKEN_HEADER_INVALID, "header over the size limit")
    assert stack.recorded.calls == []


def test_token_of_issuer_a_signed_with_issuer_b_key(stack: Stack) -> None:
    """Keys are looked up among the token's own issuer's keys: another trusted
    issuer's key (even under the same kid) never verifies it."""
    assert OTHER.kid == CORP.kid
    cases: dict[str, tuple[str, DenialReason, str]] = {
        "corp token, other's key, shared kid": (
            mint(CORP, key=OTHER.key),
            R.SIGNATURE_INVALID,
            "corp",
        ),
        "other token, corp's key, shared kid": (
            mint(OTHER, key=CORP.key),
            R.SIGNATURE_INVALID,
            "other",
        ),
        "corp token, partner's key and kid": (
            mint(CORP, key=PARTNER.key, alg="ES256", headers={"kid": PARTNER.kid}),
            R.ALGORITHM_NOT_ALLOWED,
            "",
        ),
        "open token, partner's key and kid": (
            mint(OPEN, key=PARTNER.key, alg="ES256", headers={"kid": PARTNER.kid}),
            R.KEY_UNKNOWN,
            "open",
        ),
        "open token, partner's key, no kid": (
            mint(OPEN, key=PARTNER.key, alg="ES256", headers={"kid": None}),
            R.SIGNATURE_INVALID,
            "open",
        ),
        "partner token, open's EC key and kid": (
            mint(PARTNER, key=OPEN_EC_KEY, headers={"kid": OPEN_EC_KID}),
            R.KEY_UNKNOWN,
            "partner",
        ),
    }
    for name, (token, reason, asked) in cases.items():
        stack.recorded.clear()
        outcome = stack.check(token=token)
        assert outcome.reason == reason.value, name
        denied(outcome, 401, reason)
        assert stack.recorded.issuers_asked() == ({asked} if asked else set()), name


def _remote_policy(
    tmp_path: Path, *, corp_uri: str, partner_uri: str | None = None, cooldown: str = "30s"
) -> Policy:
    lines = ["issuers:"]
    for issuer, uri in ((CORP, corp_uri), (PARTNER, partner_uri)):
        if uri is None:
            continue
        lines += [
            f"  {issuer.name}:",
            f"    issuer: {json.dumps(issuer.iss)}",
            f"    jwks_uri: {uri}",
            f"    audiences: [{AUDIENCE}]",
            f"    algorithms: [{issuer.alg}]",
            f"    keys: {{ refetch_cooldown: {cooldown} }}",
        ]
    text = "\n".join(lines) + "\n" + DEFAULT_ROUTES
    return compile_policy_text(text, label="p", base_dir=tmp_path)


@pytest.fixture
def corp_and_partner_keys() -> Iterator[tuple[Any, Any]]:
    with jwks_server(CORP.jwks()) as corp, jwks_server(PARTNER.jwks()) as partner:
        yield corp, partner


def _started(policy: Policy, clock: FixedClock) -> KeyManager:
    manager = KeyManager(clock=clock)
    manager.start(policy.issuers)
    assert manager.wait_ready(10)
    return manager


def test_no_outbound_fetch_for_an_unknown_iss(stack: Stack) -> None:
    """The issuer must be configured before any key is looked up: a token naming an
    unknown issuer (even one whose URL serves keys) costs no key lookup and no fetch."""
    with jwks_server({"keys": [public_jwk(ROGUE_RSA, kid="rogue")]}) as evil, audit_watch() as w:
        for iss in (
            evil.base_url,
            evil.jwks_uri,
            f"{evil.base_url}/.well-known/openid-configuration",
            "https://login.corp.test",
            "https://evil.test/",
        ):
            headers = {"kid": "rogue", "jku": evil.jwks_uri}
            outcome = stack.check(token=mint(CORP, key=ROGUE_RSA, iss=iss, headers=headers))
            denied(outcome, 401, R.ISSUER_UNKNOWN)
        assert sum(evil.behaviour.requests.values()) == 0
        assert w.connections() == []
    assert stack.recorded.calls == []


def test_no_outbound_fetch_for_an_unknown_iss_with_the_real_key_manager(
    tmp_path: Path, corp_and_partner_keys: tuple[Any, Any]
) -> None:
    corp_keys, _ = corp_and_partner_keys
    clock = FixedClock(NOW)
    policy = _remote_policy(tmp_path, corp_uri=corp_keys.jwks_uri)
    manager = _started(policy, clock)
    try:
        stack = make_stack(policy, manager, clock)
        before = corp_keys.count()
        for iss in (corp_keys.base_url, corp_keys.jwks_uri, "https://unknown.test/"):
            token = mint(CORP, iss=iss, headers={"kid": uuid.uuid4().hex})
            denied(stack.check(token=token), 401, R.ISSUER_UNKNOWN)
        assert corp_keys.count() == before
        assert corp_keys.count("/.well-known/openid-configuration") == 0
    finally:
        manager.stop()


def test_random_kid_flood_costs_the_burst_then_one_refetch_per_issuer_per_cooldown(
    tmp_path: Path, corp_and_partner_keys: tuple[Any, Any]
) -> None:
    """Unknown kids trigger refetches from each issuer's bucket: a burst of
    `REFETCH_BURST`, then one per `refetch_cooldown`, however many requests arrive and
    from however many threads."""
    corp_keys, partner_keys = corp_and_partner_keys
    clock = FixedClock(NOW)
    policy = _remote_policy(
        tmp_path, corp_uri=corp_keys.jwks_uri, partner_uri=partner_keys.jwks_uri
    )
    manager = _started(policy, clock)
    try:
        service = make_stack(policy, manager, clock).service

        def flood(count: int) -> list[int]:
            tokens = [
                mint(CORP, headers={"kid": uuid.uuid4().hex})
                if i % 2
                else mint(PARTNER, headers={"kid": uuid.uuid4().hex})
                for i in range(count)
            ]
            with ThreadPoolExecutor(max_workers=8) as pool:
                responses = list(
                    pool.map(lambda t: service.Check(check_request(token=t), None), tokens)
                )
            return [int(r.denied_response.status.code) for r in responses]

        start = (corp_keys.count(), partner_keys.count())
        with DecisionLog() as decisions:
            statuses = flood(300)
        assert set(statuses) == {401}
        assert set(decisions.reasons()) == {R.KEY_UNKNOWN.value}
        burst = (start[0] + REFETCH_BURST, start[1] + REFETCH_BURST)
        assert (corp_keys.count(), partner_keys.count()) == burst
        clock.advance(10)  # the bucket earns one back every 30 s: none yet
        flood(100)
        assert (corp_keys.count(), partner_keys.count()) == burst
        clock.advance(21)  # one earned back: one more each
        flood(300)
        assert (corp_keys.count(), partner_keys.count()) == (burst[0] + 1, burst[1] + 1)
    finally:
        manager.stop()


# JWE ---------------------------------------------------------------------------------


def _ecdh_token(alg: str = "ECDH-ES+A256KW") -> str:
    return encrypt(mint(CORP).encode(), public_of(ENC_EC), alg, cty="JWT")


def _p384_point() -> dict[str, Any]:
    public = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-384",
        "x": b64url(public.x.to_bytes(48, "big")),
        "y": b64url(public.y.to_bytes(48, "big")),
    }


def test_cve_2016_9121_go_jose_ecdh_es_invalid_curve_epk(stack: Stack) -> None:
    """go-jose < 1.0.4 (and node-jose, jose2go, Nimbus) ran ECDH-ES with an `epk` that
    is not on the key's curve, leaking the private key a few bits per token."""
    p384 = _p384_point()
    bad_epks: dict[str, dict[str, Any]] = {
        "off the curve": {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(b"\x00" * 31 + b"\x01"),
            "y": b64url(b"\x00" * 31 + b"\x01"),
        },
        "the origin": {"kty": "EC", "crv": "P-256", "x": b64url(bytes(32)), "y": b64url(bytes(32))},
        "a P-384 point named P-256": {**p384, "crv": "P-256"},
        "a P-384 point": p384,
        "no curve": {"kty": "EC", "x": p384["x"], "y": p384["y"]},
        "not an EC key": {"kty": "oct", "k": b64url(b"\x01" * 32)},
    }
    for alg in ("ECDH-ES+A256KW", "ECDH-ES"):
        good = _ecdh_token(alg)
        assert stack.check(token=good).status == 200
        for name, epk in bad_epks.items():
            token = with_header(good, header_of(good) | {"epk": epk})
            outcome = stack.check(token=token)
            assert outcome.reason == R.DECRYPTION_FAILED.value, (alg, name)
            denied(outcome, 401, R.DECRYPTION_FAILED)
    # the point is refused when imported, before any key agreement with our key
    for name in ("off the curve", "the origin", "a P-384 point named P-256"):
        with pytest.raises(ValueError, match=r"."):
            ECKey.import_key(bad_epks[name])


def test_cve_2024_33664_python_jose_jwe_zip_bomb(stack: Stack) -> None:
    """python-jose (and jwcrypto CVE-2024-28102, go-jose CVE-2024-28180) inflated
    `zip: DEF` plaintext without bound. We refuse compressed JWE outright."""
    bomb = b'{"sub":"' + b"a" * 1_000_000 + b'"}'
    for plaintext, alg, recipient in (
        (mint(CORP).encode(), "RSA-OAEP-256", public_of(ENC_RSA)),
        (bomb, "RSA-OAEP-256", public_of(ENC_RSA)),
        (bomb, "ECDH-ES+A256KW", public_of(ENC_EC)),
        (bomb, "A256KW", SHARED_CORP),
    ):
        token = encrypt(plaintext, recipient, alg, zip="DEF")
        assert len(token) < MAX_TOKEN_BYTES
        denied(stack.check(token=token), 401, R.TOKEN_COMPRESSED)


def test_library_gap_joserfc_inflates_zip_when_listed(stack: Stack) -> None:
    """joserfc inflates up to 256 KB (its own cap) from a token of a few hundred bytes."""
    bomb = b'{"sub":"' + b"a" * 250_000 + b'"}'
    token = encrypt(bomb, public_of(ENC_RSA), "RSA-OAEP-256", zip="DEF")
    private = RSAKey.import_key(ENC_RSA.export(private_key=True, as_dict=True))
    registry = JWERegistry(algorithms=["RSA-OAEP-256", "A256GCM", "DEF"])
    inflated = joserfc_jwe.decrypt_compact(token, private, registry=registry).plaintext
    assert inflated is not None
    assert len(inflated) > 100 * len(token)
    denied(stack.check(token=token), 401, R.TOKEN_COMPRESSED)


def _pbes2_token(alg: str, p2c: int) -> str:
    header = {"alg": alg, "enc": "A256GCM", "p2s": b64url(b"\x07" * 16), "p2c": p2c}
    encrypted_key, iv, ciphertext, tag = b"\x01" * 40, b"\x02" * 12, b"\x03" * 32, b"\x04" * 16
    return ".".join(
        b64url(s) for s in (json.dumps(header).encode(), encrypted_key, iv, ciphertext, tag)
    )


def test_cve_2026_27932_joserfc_pbes2_p2c_is_refused_whatever_the_count(stack: Stack) -> None:
    """joserfc <= 1.6.2 (and Nimbus CVE-2023-52428, panva/jose CVE-2022-36083) ran
    PBKDF2 for as many iterations as the token's `p2c` asked. No PBES2 here at all."""
    started = time.perf_counter()
    for alg in ("PBES2-HS256+A128KW", "PBES2-HS384+A192KW", "PBES2-HS512+A256KW"):
        for p2c in (1, 1000, 300_000, 2**31 - 1, 2**63):
            denied(stack.check(token=_pbes2_token(alg, p2c)), 401, R.ENCRYPTION_NOT_ALLOWED)
    assert time.perf_counter() - started < 5  # 2**31 PBKDF2 rounds would take minutes
    # jwcrypto makes a real one: refused the same
    password = jwcrypto_jwk.JWK.from_password("correct horse")
    real = encrypt(mint(CORP).encode(), password, "PBES2-HS256+A128KW", p2c=8192)
    denied(stack.check(token=real), 401, R.ENCRYPTION_NOT_ALLOWED)
    # neither a policy nor the decryption config can turn it on
    with pytest.raises(PolicyError):
        compile_policy_text(
            _decryption_policy("PBES2-HS256+A128KW"), label="p", base_dir=Path.cwd()
        )
    config = _config_allowing("PBES2-HS256+A128KW", "PBES2-HS512+A256KW")
    assert config.algorithms == frozenset({"RSA-OAEP-256"})


def _refused_decryption_algorithm(alg: str) -> None:
    with pytest.raises(PolicyError) as refused:
        compile_policy_text(_decryption_policy(alg), label="p", base_dir=Path.cwd())
    assert [p.field for p in refused.value.problems] == ["decryption.algorithms[1]"]


def _decryption_policy(alg: str) -> str:
    keys = {"keys": [ENC_RSA.export(private_key=True, as_dict=True)]}
    return (
        f"issuers:\n  corp:\n    issuer: {json.dumps(CORP.iss)}\n"
        f"    jwks: {json.dumps(CORP.jwks())}\n"
        f"decryption:\n  jwks: {json.dumps(keys)}\n  algorithms: [RSA-OAEP-256, {alg}]\n"
        "  encryptions: [A256GCM]\n" + ROUTES
    )


def _config_allowing(*algorithms: str) -> DecryptionConfig:
    keys = parse_decryption_jwks({"keys": [ENC_RSA.export(private_key=True, as_dict=True)]})
    return DecryptionConfig.build(
        keys, frozenset({"RSA-OAEP-256", *algorithms}), frozenset({"A256GCM", "A128GCM"})
    )


def test_rsa1_5_bleichenbacher_padding_oracle_is_refused(stack: Stack) -> None:
    """RSA1_5 key transport is a padding oracle by design (Bleichenbacher 1998, the
    Marvin attack 2023; jwcrypto's Million Message Attack fix): never decrypted."""
    for enc in ("A256GCM", "A128CBC-HS256"):
        token = encrypt(mint(CORP).encode(), public_of(ENC_RSA), "RSA1_5", enc, cty="JWT")
        denied(stack.check(token=token), 401, R.ENCRYPTION_NOT_ALLOWED)
    without_kid = encrypt(mint(CORP).encode(), public_of(ENC_RSA), "RSA1_5", kid=None)
    denied(stack.check(token=without_kid), 401, R.ENCRYPTION_NOT_ALLOWED)
    _refused_decryption_algorithm("RSA1_5")
    assert _config_allowing("RSA1_5").algorithms == frozenset({"RSA-OAEP-256"})


def test_library_gap_joserfc_decrypts_rsa1_5_and_pbes2_when_listed(stack: Stack) -> None:
    private = RSAKey.import_key(ENC_RSA.export(private_key=True, as_dict=True))
    token = encrypt(b"secret", public_of(ENC_RSA), "RSA1_5", "A128GCM")
    registry = JWERegistry(algorithms=["RSA1_5", "A128GCM"])
    with pytest.warns(SecurityWarning):
        assert joserfc_jwe.decrypt_compact(token, private, registry=registry).plaintext == b"secret"
    denied(stack.check(token=token), 401, R.ENCRYPTION_NOT_ALLOWED)
    password = jwcrypto_jwk.JWK.from_password("correct horse")
    pbes2 = encrypt(b"secret", password, "PBES2-HS256+A128KW", "A128GCM", p2c=8192)
    registry = JWERegistry(algorithms=["PBES2-HS256+A128KW", "A128GCM"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        result = joserfc_jwe.decrypt_compact(
            pbes2, OctKey.import_key(b"correct horse"), registry=registry
        )
    assert result.plaintext == b"secret"
    denied(stack.check(token=pbes2), 401, R.ENCRYPTION_NOT_ALLOWED)


def test_gcm_tag_truncated_extended_or_missing(stack: Stack) -> None:
    """A shortened GCM tag is forgeable (a 4-byte tag falls in 2**32 tries): only a
    16-byte tag is looked at, and a wrong one is a generic decryption failure."""
    good = nested(mint(CORP))
    assert stack.check(token=good).status == 200
    tag = segments(good)[4]
    wrong_length = {
        "truncated to 15": tag[:15],
        "truncated to 12": tag[:12],
        "truncated to 8": tag[:8],
        "truncated to 4": tag[:4],
        "truncated to 1": tag[:1],
        "missing": b"",
        "extended to 17": tag + b"\x00",
        "extended to 32": tag + tag,
    }
    for name, value in wrong_length.items():
        outcome = stack.check(token=with_segment(good, 4, value))
        assert outcome.reason == R.TOKEN_MALFORMED.value, name
        denied(outcome, 401, R.TOKEN_MALFORMED, "tag length wrong for A256GCM")
    flipped = bytes([tag[0] ^ 0x80]) + tag[1:]
    denied(stack.check(token=with_segment(good, 4, flipped)), 401, R.DECRYPTION_FAILED)
    # separator and tag gone: four segments
    denied(stack.check(token=good.rsplit(".", 1)[0]), 401, R.TOKEN_MALFORMED)
    denied(
        stack.check(token=with_segment(good, 2, segments(good)[2][:8])),
        401,
        R.TOKEN_MALFORMED,
        "IV length wrong for A256GCM",
    )
    # every failure looks the same to the client
    bodies = {
        stack.check(token=with_segment(good, 4, v)).body for v in (*wrong_length.values(), flipped)
    }
    assert len(bodies) == 1


# token structure -------------------------------------------------------------------


def _duplicates() -> dict[str, str]:
    header = f'{{"alg":"RS256","kid":"{CORP.kid}"}}'.encode()
    claims = good_claims(CORP)
    body = json.dumps(claims)[:-1]
    return {
        "payload sub twice": sign(header, (body + ', "sub": "admin"}').encode()),
        "payload scope twice": sign(header, (body + ', "scope": "orders:write admin"}').encode()),
        "nested claim twice": sign(
            header,
            json.dumps(claims).replace('"tenant-corp"', '"tenant-corp", "tenant": "x"').encode(),
        ),
        "header alg twice": sign(
            f'{{"alg":"none","kid":"{CORP.kid}","alg":"RS256"}}'.encode(), claims_bytes()
        ),
        "header kid twice": sign(
            f'{{"alg":"RS256","kid":"x","kid":"{CORP.kid}"}}'.encode(), claims_bytes()
        ),
    }


def test_duplicate_json_members_are_refused(stack: Stack) -> None:
    """Parsers disagree on which of two same-named members wins (first, last, error):
    a token that means different things to different parsers is refused."""
    for name, token in _duplicates().items():
        outcome = stack.check(token=token)
        assert outcome.reason == R.TOKEN_DUPLICATE_MEMBER.value, name
        denied(outcome, 401, R.TOKEN_DUPLICATE_MEMBER)
    # inside a JWE: its protected header, its bare claims, its nested token
    good = nested(mint(CORP))
    raw_header = json.dumps(header_of(good))[:-1] + ', "enc": "A128GCM"}'
    jwe_header_twice = ".".join([b64url(raw_header.encode()), *good.split(".")[1:]])
    bare = (json.dumps(good_claims(CORP))[:-1] + ', "sub": "admin"}').encode()
    cases = {
        "JWE header enc twice": jwe_header_twice,
        "bare claims sub twice": encrypt(bare, SHARED_CORP, "A256KW"),
        "nested payload sub twice": nested(_duplicates()["payload sub twice"]),
    }
    for name, token in cases.items():
        outcome = stack.check(token=token)
        assert outcome.reason == R.TOKEN_DUPLICATE_MEMBER.value, name
        denied(outcome, 401, R.TOKEN_DUPLICATE_MEMBER)


def test_library_gap_joserfc_takes_the_last_duplicate_member(stack: Stack) -> None:
    token = _duplicates()["payload sub twice"]
    public = RSAKey.import_key(CORP.public_jwk())
    claims = joserfc_jwt.decode(token, public, algorithms=["RS256"]).claims
    assert claims["sub"] == "admin"
    denied(stack.check(token=token), 401, R.TOKEN_DUPLICATE_MEMBER)


def test_json_serialization_is_not_a_bearer_token(stack: Stack) -> None:
    """JWS/JWE JSON serialization (general and flattened): unprotected headers,
    several signatures; a bearer token is compact or nothing."""
    header, payload, signature = mint(CORP).split(".")
    flattened = {"protected": header, "payload": payload, "signature": signature}
    general = {"payload": payload, "signatures": [{"protected": header, "signature": signature}]}
    unprotected = {**flattened, "header": {"kid": CORP.kid}}
    protected, key, iv, ciphertext, tag = nested(mint(CORP)).split(".")
    jwe_json = {
        "protected": protected,
        "encrypted_key": key,
        "iv": iv,
        "ciphertext": ciphertext,
        "tag": tag,
    }
    single_member = {"payload": f"{header}.{payload}.{signature}"}
    for document in (flattened, general, unprotected, jwe_json, single_member):
        text = json.dumps(document)
        for value in (text, json.dumps(document, separators=(",", ":"))):
            # a comma reads as two credentials; without one, it is no b64token
            reason = R.AUTHORIZATION_MULTIPLE if "," in value else R.AUTHORIZATION_MALFORMED
            denied(stack.check(authorization=f"Bearer {value}"), 400, reason)
        denied(stack.check(token=b64url(text.encode())), 401, R.TOKEN_MALFORMED)
    assert stack.recorded.calls == []


def test_unknown_crit_is_refused(stack: Stack) -> None:
    """RFC 7515 section 4.1.11: a recipient that does not understand a `crit`
    extension must refuse the token. We implement none."""
    crits: list[dict[str, Any]] = [
        {"crit": ["exp"], "exp": NOW + 600},
        {"crit": ["b64"], "b64": False},
        {"crit": ["https://example.invalid/ext"], "https://example.invalid/ext": True},
        {"crit": []},
        {"crit": "exp"},
    ]
    for extra in crits:
        header = json.dumps({"alg": "RS256", "kid": CORP.kid, **extra}).encode()
        denied(stack.check(token=sign(header, claims_bytes())), 401, R.TOKEN_CRIT_UNSUPPORTED)
    good = nested(mint(CORP))
    token = with_header(good, header_of(good) | {"crit": ["exp"], "exp": 1})
    denied(stack.check(token=token), 401, R.TOKEN_CRIT_UNSUPPORTED)


def test_oversized_tokens_and_headers_are_refused_before_any_parsing(stack: Stack) -> None:
    """Sizes are checked before decoding: the garbage below would fail to parse, and
    the reason shows it was never parsed."""
    with audit_watch():
        cases = {
            "authorization header over 16 KiB": (
                "Bearer " + "!" * 17_000,
                R.TOKEN_TOO_LARGE,
                "authorization header over the size limit",
            ),
            "token over 16 KiB": (
                "Bearer " + "a" * (MAX_TOKEN_BYTES + 1),
                R.TOKEN_TOO_LARGE,
                f"token over {MAX_TOKEN_BYTES} bytes",
            ),
            "five segments over 16 KiB": (
                "Bearer " + ".".join(["a" * 3280] * 5),
                R.TOKEN_TOO_LARGE,
                f"token over {MAX_TOKEN_BYTES} bytes",
            ),
            "header over 4 KiB, not even JSON": (
                f"Bearer {b64url(b'x' * (MAX_HEADER_BYTES + 1))}.e30.",
                R.TOKEN_HEADER_INVALID,
                "header over the size limit",
            ),
            "signature over 1 KiB": (
                "Bearer " + mint(CORP).rsplit(".", 1)[0] + "." + b64url(b"\x01" * 1025),
                R.TOKEN_MALFORMED,
                "signature over the size limit",
            ),
        }
        for name, (authorization, reason, detail) in cases.items():
            outcome = stack.check(authorization=authorization)
            assert (outcome.reason, outcome.detail) == (reason.value, detail), name
            denied(outcome, 401, reason, detail)
    good = nested(mint(CORP))
    big = header_of(good) | {"x": "y" * MAX_HEADER_BYTES}
    denied(
        stack.check(token=with_header(good, big)),
        401,
        R.TOKEN_HEADER_INVALID,
        "header over the size limit",
    )
    assert stack.recorded.calls == []


def test_library_gap_joserfc_algorithm_model_has_no_size_cap(stack: Stack) -> None:
    """joserfc's size caps live in its registry and deserializers (a 512-byte JWS
    header, 128 KB payload); the algorithm model we call verifies any input, so
    the caps that protect us are our own."""
    model = JWSRegistry.algorithms["RS256"]
    public = RSAKey.import_key(CORP.public_jwk())
    huge = b"e30." + b"A" * 1_000_000
    assert model.verify(huge, b"\x00" * 256, public) is False
    token = mint(CORP, padding="x" * (MAX_TOKEN_BYTES + 1))
    denied(stack.check(token=token), 401, R.TOKEN_TOO_LARGE)


# claims ------------------------------------------------------------------------------


def test_aud_as_a_substring_a_number_or_missing(stack: Stack) -> None:
    audiences: dict[str, Any] = {
        "substring": "orders",
        "superstring": "orders-api-v2",
        "prefix match": "orders-ap",
        "case": "ORDERS-API",
        "whitespace": " orders-api",
        "number": 42,
        "float": 4.2,
        "boolean": True,
        "null": None,
        "object": {"aud": AUDIENCE},
        "empty list": [],
        "list of a substring": ["orders"],
        "list with a number": [AUDIENCE, 1],
        "list of lists": [[AUDIENCE]],
    }
    for name, aud in audiences.items():
        outcome = stack.check(token=mint(CORP, aud=aud))
        assert outcome.reason == R.AUDIENCE_MISMATCH.value, name
        denied(outcome, 401, R.AUDIENCE_MISMATCH)
    denied(stack.check(token=mint(CORP, drop=("aud",))), 401, R.AUDIENCE_MISMATCH)
    assert stack.check(token=mint(CORP, aud=["x", AUDIENCE])).status == 200


def test_cve_2024_53861_pyjwt_issuer_partial_match(stack: Stack) -> None:
    """PyJWT 2.10.0 compared `iss` with `in`, so a substring of the expected issuer
    passed. Our issuer lookup is an exact dictionary match on the whole string."""
    for iss in (
        "https://login.corp.test",
        "login.corp.test",
        "https://login.corp.test/x",
        "https://login.corp.test//",
        "HTTPS://LOGIN.CORP.TEST/",
        "https://login.corp.test/\x00",
        "",
    ):
        denied(stack.check(token=mint(CORP, iss=iss)), 401, R.ISSUER_UNKNOWN)
    denied(stack.check(token=mint(CORP, iss=[CORP.iss])), 401, R.CLAIM_TYPE_INVALID)
    assert stack.recorded.calls == []


def test_numeric_string_exp_and_other_non_numeric_dates(stack: Stack) -> None:
    """RFC 7519 NumericDate is a JSON number: "1800000600" is not one (some libraries
    coerce it, or compare it as a string)."""
    values: dict[str, Any] = {
        "numeric string": str(NOW + 600),
        "float string": f"{NOW + 600}.0",
        "padded string": f" {NOW + 600}",
        "boolean": True,
        "list": [NOW + 600],
        "object": {"$date": NOW + 600},
        "null": None,
    }
    for name, value in values.items():
        for claim in ("exp", "nbf", "iat"):
            overrides: dict[str, Any] = {claim: value}
            outcome = stack.check(token=mint(CORP, **overrides))
            assert outcome.reason == R.CLAIM_TYPE_INVALID.value, (name, claim)
            denied(outcome, 401, R.CLAIM_TYPE_INVALID)
    header = f'{{"alg":"RS256","kid":"{CORP.kid}"}}'.encode()
    body = json.dumps(good_claims(CORP))[:-1]
    infinite = sign(header, body.replace(f'"exp": {NOW + 600}', '"exp": 1e400').encode() + b"}")
    denied(stack.check(token=infinite), 401, R.CLAIM_TYPE_INVALID)
    for constant in ("NaN", "Infinity"):
        text = body.replace(f'"exp": {NOW + 600}', f'"exp": {constant}') + "}"
        denied(stack.check(token=sign(header, text.encode())), 401, R.TOKEN_PAYLOAD_INVALID)


def test_bare_jwe_encrypted_to_our_public_key_is_not_a_signed_identity(stack: Stack) -> None:
    """Anyone can encrypt to our public key: a JWE around bare claims proves nothing
    about who wrote them. Only a symmetric key shared with one issuer alone vouches."""
    forged = json.dumps(good_claims(CORP) | {"sub": "forged"}).encode()
    for alg, recipient in (
        ("RSA-OAEP-256", public_of(ENC_RSA)),
        ("ECDH-ES", public_of(ENC_EC)),
        ("ECDH-ES+A256KW", public_of(ENC_EC)),
    ):
        token = encrypt(forged, recipient, alg)
        denied(stack.check(token=token), 401, R.UNSIGNED_ENCRYPTED_CLAIMS)
    # declaring it a nested JWT does not help
    token = encrypt(forged, public_of(ENC_RSA), "RSA-OAEP-256", cty="JWT")
    denied(stack.check(token=token), 401, R.NESTED_TOKEN_INVALID)
    # corp's shared key vouches for corp only
    partner = json.dumps(good_claims(PARTNER)).encode()
    denied(
        stack.check(token=encrypt(partner, SHARED_CORP, "A256KW")), 401, R.UNSIGNED_ENCRYPTED_CLAIMS
    )
    allowed = stack.check(
        token=encrypt(json.dumps(good_claims(CORP)).encode(), SHARED_CORP, "A256KW")
    )
    assert allowed.status == 200


# key sets ----------------------------------------------------------------------------


def _weak_keys() -> dict[str, tuple[Any, dict[str, Any], str]]:
    """kid -> (private key, published JWK, what hygiene says), all on one issuer."""
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    private = rsa_key()
    enc = rsa_key()
    ops = rsa_key()
    k1 = ec.generate_private_key(ec.SECP256K1())
    p256 = ec.generate_private_key(ec.SECP256R1())
    private_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private)) | {"kid": "private"}
    private_jwk.pop("key_ops", None)  # PyJWT writes ["sign"]; the `d` is what is tested
    k1_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(k1.public_key())) | {"kid": "k1"}
    return {
        "weak": (weak, public_jwk(weak, kid="weak"), "RSA key of 1024 bits is under 2048"),
        "private": (private, private_jwk, "holds private or symmetric key material"),
        "enc": (enc, public_jwk(enc, kid="enc") | {"use": "enc"}, "'use' is not 'sig'"),
        "ops": (ops, public_jwk(ops, kid="ops") | {"key_ops": ["encrypt"]}, "'key_ops'"),
        "k1": (k1, k1_jwk, "unsupported EC curve"),
        "misbound": (p256, public_jwk(p256, kid="misbound", alg="RS256"), "does not fit a EC key"),
    }


MIXED_ISS = "https://mixed.test"
HMAC_SECRET = b"s" * 32


def _mixed_policy(
    tmp_path: Path, weak: dict[str, tuple[Any, dict[str, Any], str]]
) -> tuple[Policy, dict[str, rsa.RSAPrivateKey]]:
    """The `mixed` issuer publishing `weak`, an HMAC secret, two keys under one kid and
    one good key; returns the policy and the private keys of the last three."""
    dup_a, dup_b = rsa_key(), rsa_key()
    good = rsa_key()
    published = [entry for _, entry, _ in weak.values()]
    published += [
        {"kty": "oct", "kid": "hmac", "k": b64url(HMAC_SECRET), "alg": "HS256"},
        public_jwk(dup_a, kid="dup"),
        public_jwk(dup_b, kid="dup"),
        public_jwk(good, kid="good", alg="RS256"),
    ]
    text = (
        "issuers:\n  mixed:\n"
        f"    issuer: {MIXED_ISS}\n    audiences: [{AUDIENCE}]\n    algorithms: [RS256, ES256]\n"
        f"    jwks: {json.dumps({'keys': published})}\n" + ROUTES
    )
    return compile_policy_text(text, label="p", base_dir=tmp_path), {"dup": dup_a, "good": good}


def _mixed_token(key: Any, kid: str, alg: str = "RS256") -> str:
    claims = good_claims(CORP) | {"iss": MIXED_ISS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns about the 1024-bit key
        return jwt.api_jws.encode(
            json.dumps(claims).encode(), key, algorithm=alg, headers={"kid": kid}
        )


def test_weak_or_mixed_keys_in_a_jwks_are_never_used(tmp_path: Path) -> None:
    """A 1024-bit RSA key, a private key, an HMAC secret, an encryption key, an
    unsupported curve, a key bound to the wrong algorithm, two keys under one kid:
    each is skipped, the good key of the same set still works."""
    weak = _weak_keys()
    policy, extra = _mixed_policy(tmp_path, weak)
    stack = make_stack(policy)
    for kid, (key, _, _) in weak.items():
        alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
        if kid == "k1":
            alg = "ES256K"
        outcome = stack.check(token=_mixed_token(key, kid, alg))
        expected = R.ALGORITHM_NOT_ALLOWED if kid == "k1" else R.KEY_UNKNOWN
        assert outcome.reason == expected.value, kid
        denied(outcome, 401, expected)
    hs = _hmac_token(HMAC_SECRET, good_claims(CORP) | {"iss": MIXED_ISS}, "hmac", "HS256")
    denied(stack.check(token=hs), 401, R.ALGORITHM_NOT_ALLOWED)
    denied(stack.check(token=_mixed_token(extra["dup"], "dup")), 401, R.KEY_UNKNOWN)
    assert stack.check(token=_mixed_token(extra["good"], "good")).status == 200
    # and hygiene says why, for the operator
    issuer = policy.issuers["mixed"]
    assert issuer.source.static_keys is not None
    assert issuer.source.static_keys.kids() == ["good"]
    skipped = parse_jwks({"keys": [entry for _, entry, _ in weak.values()]}).skipped
    for _, _, why in weak.values():
        assert any(why in note for note in skipped), why


def test_remote_jwks_of_only_weak_keys_is_unavailable_never_an_allow(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    document = {
        "keys": [
            public_jwk(weak, kid=CORP.kid),
            {"kty": "oct", "kid": "hmac", "k": b64url(HMAC_SECRET)},
        ]
    }
    with jwks_server(document) as server:
        clock = FixedClock(NOW)
        policy = _remote_policy(tmp_path, corp_uri=server.jwks_uri)
        manager = _started(policy, clock)
        try:
            stack = make_stack(policy, manager, clock)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                token = mint(CORP, key=weak)
            denied(stack.check(token=token), 503, R.KEYS_UNAVAILABLE)
            assert stack.check(token=mint(CORP)).status == 503
        finally:
            manager.stop()


def test_library_gap_joserfc_verifies_with_a_1024_bit_key(tmp_path: Path) -> None:
    weak = _weak_keys()
    key, published, _ = weak["weak"]
    token = _mixed_token(key, "weak")
    with pytest.warns(SecurityWarning):
        imported = RSAKey.import_key(published)
    assert joserfc_jws.deserialize_compact(token, imported, algorithms=["RS256"]).payload
    stack = make_stack(_mixed_policy(tmp_path, weak)[0])
    denied(stack.check(token=token), 401, R.KEY_UNKNOWN)


# the limits, as documented ------------------------------------------------------------


def test_docs_security_md_quotes_the_limits_in_force() -> None:
    """docs/security.md lists every size and count limit with its value: the table is
    read back and compared with the code, so a changed limit updates the page."""
    from ext_authz.envoy import request
    from ext_authz.keys import decryption_keys, fetch, jwk, jwks
    from ext_authz.policy import claim_headers, loader, routes, yaml_source
    from ext_authz.policy.schema import KeysSettingsModel
    from ext_authz.tokens import credentials, decrypt
    from ext_authz.tokens import format as token_format

    in_force = {
        "MAX_AUTHORIZATION_BYTES": credentials.MAX_AUTHORIZATION_BYTES,
        "MAX_TOKEN_BYTES": token_format.MAX_TOKEN_BYTES,
        "MAX_HEADER_BYTES": token_format.MAX_HEADER_BYTES,
        "MAX_SIGNATURE_BYTES": token_format.MAX_SIGNATURE_BYTES,
        "MAX_KEYS": jwks.MAX_KEYS,
        "MIN_RSA_BITS": jwk.MIN_RSA_BITS,
        "MAX_KID_LENGTH": jwk.MAX_KID_LENGTH,
        "MAX_MEMBER_CHARS": jwk.MAX_MEMBER_CHARS,
        "keys.max_jwks_bytes": KeysSettingsModel().max_jwks_bytes,
        "MAX_HEADER_VALUE_BYTES": claim_headers.MAX_HEADER_VALUE_BYTES,
        "MAX_HEADERS": request.MAX_HEADERS,
        "MAX_POLICY_BYTES": loader.MAX_POLICY_BYTES,
        "MAX_KEY_FILE_BYTES": loader.MAX_KEY_FILE_BYTES,
        "MAX_DEPTH": yaml_source.MAX_DEPTH,
        "MAX_NODES": yaml_source.MAX_NODES,
        "MAX_PATH_LENGTH": routes.MAX_PATH_LENGTH,
        "MAX_DISCOVERY_BYTES": fetch.MAX_DISCOVERY_BYTES,
        "MAX_DECRYPTION_KEYS": decryption_keys.MAX_DECRYPTION_KEYS,
        "MAX_KEYS_TRIED": decrypt.MAX_KEYS_TRIED,
    }
    page = Path(__file__).resolve().parents[1] / "docs" / "security.md"
    rows = re.findall(r"^\| `([\w.]+)` \| `(\d+)`", page.read_text(encoding="utf-8"), re.M)
    assert {name: int(value) for name, value in rows} == in_force


# the log -----------------------------------------------------------------------------


def test_log_injection_through_the_jwe_header_is_not_possible(stack: Stack) -> None:
    forged = "x\ninfo    ext_authz.decision: ok"
    for header in ({"alg": forged, "enc": "A256GCM"}, {"alg": "RSA-OAEP-256", "enc": forged}):
        parts = [json.dumps(header).encode(), b"k" * 8, b"i" * 12, b"c" * 8, b"t" * 16]
        outcome = stack.check(token=".".join(b64url(p) for p in parts))
        assert outcome.status == 401
        assert outcome.reason == "token_header_invalid"
        assert "\n" not in (outcome.detail or "")
