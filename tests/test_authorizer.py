"""The decision pipeline, as a table of named cases over named tokens.

Every case runs a full `Authorizer.check` on a request view and asserts the verdict:
the denial reason for denials, the injected and removed headers for allows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from ext_authz.authorizer import Authorizer
from ext_authz.decision import Allow, Decision, Deny
from ext_authz.errors import DenialReason
from ext_authz.keys.jwks import KeySet, parse_jwks
from ext_authz.keys.store import IssuerKeys, KeyStatus
from ext_authz.policy.loader import compile_policy_text
from ext_authz.policy.model import Policy
from ext_authz.request import RequestView
from ext_authz.tokens.cache import VerifiedTokenCache
from tests.support.doubles import FixedClock, StaticKeys
from tests.support.tokens import (
    CORP,
    EDGE,
    NOW,
    PARTNER,
    PSS,
    ROGUE_RSA,
    b64url,
    mint,
    public_jwk,
    unsigned,
)

R = DenialReason


def make_policy(tmp_path: Path) -> Policy:
    from tests.support.tokens import policy_yaml

    return compile_policy_text(
        policy_yaml(CORP, PARTNER, EDGE, PSS), label="policy.yaml", base_dir=tmp_path
    )


def request(
    path: str = "/api/orders",
    method: str = "GET",
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> RequestView:
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["authorization"] = f"Bearer {token}"
    return RequestView(method=method, path=path, host="api.test", headers=all_headers)


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    return make_policy(tmp_path)


@pytest.fixture
def authorizer(policy: Policy) -> Authorizer:
    return Authorizer(lambda: policy, StaticKeys.of(policy), FixedClock(NOW))


def _hs256_with_public_pem() -> str:
    """RS/HS confusion: HMAC 'signed' with the issuer's public key as the secret."""
    pem = CORP.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": CORP.kid, "typ": "JWT"}
    import hashlib
    import hmac

    from tests.support.tokens import b64json, good_claims

    signing_input = f"{b64json(header)}.{b64json(good_claims(CORP))}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def _alg_none() -> str:
    from tests.support.tokens import good_claims

    return unsigned({"alg": "none", "kid": CORP.kid}, good_claims(CORP))


def _tampered() -> str:
    header, _payload, signature = mint(CORP).split(".")
    from tests.support.tokens import b64json, good_claims

    claims = good_claims(CORP) | {"sub": "admin"}
    return f"{header}.{b64json(claims)}.{signature}"


def _embedded_jwk() -> str:
    """An attacker's own key in the `jwk` header must never be used."""
    return mint(CORP, key=ROGUE_RSA, headers={"kid": None, "jwk": public_jwk(ROGUE_RSA, kid=None)})


def _duplicate_member() -> str:
    """A properly signed payload that names `sub` twice: parsers disagree on which wins."""
    body = (
        '{"iss":"https://login.corp.test/","sub":"user","aud":"orders-api",'
        f'"exp":{NOW + 600},"scope":"orders:read","sub":"admin"}}'
    )
    return jwt.api_jws.encode(body.encode(), CORP.key, algorithm="RS256", headers={"kid": CORP.kid})


def _jku() -> str:
    return mint(CORP, key=ROGUE_RSA, headers={"jku": "https://evil.test/jwks.json"})


@dataclass(frozen=True)
class Case:
    token: str | None
    expect: DenialReason | None  # None: allowed
    path: str = "/api/orders"
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    raw_authorization: str | None = None


CASES: dict[str, Any] = {
    # allowed
    "good_rs256": Case(mint(CORP), None),
    "good_es256": Case(mint(PARTNER), None),
    "good_eddsa": Case(mint(EDGE), None),
    "good_ps256": Case(mint(PSS), None),
    "good_without_kid_single_key": Case(mint(CORP, headers={"kid": None}), None),
    "good_aud_list": Case(mint(CORP, aud=["other", "orders-api"]), None),
    "expired_within_leeway": Case(mint(CORP, exp=NOW - 30), None),
    "anonymous_route_without_token": Case(None, None, path="/healthz"),
    "write_with_scope_and_verified_email": Case(mint(CORP), None, method="POST"),
    "admin_group_in_list_claim": Case(mint(CORP, groups=["admins"]), None, path="/admin"),
    # routing
    "deny_route": Case(mint(CORP), R.ROUTE_DENY, path="/internal"),
    # credentials
    "no_token": Case(None, R.TOKEN_MISSING),
    "basic_scheme": Case(None, R.AUTHORIZATION_NOT_BEARER, raw_authorization="Basic dXNlcjpwYXNz"),
    "two_tokens": Case(
        None, R.AUTHORIZATION_MULTIPLE, raw_authorization=f"Bearer {mint(CORP)},Bearer x"
    ),
    "bearer_without_token": Case(None, R.AUTHORIZATION_MALFORMED, raw_authorization="Bearer "),
    # token format
    "garbage": Case("not-a-token", R.TOKEN_MALFORMED),
    "oversized": Case("a" * 17000, R.TOKEN_TOO_LARGE),
    "jwe_shaped": Case("a.b.c.d.e", R.TOKEN_ENCRYPTED_UNSUPPORTED),
    "duplicate_claim_signed": Case(_duplicate_member(), R.TOKEN_DUPLICATE_MEMBER),
    "unknown_crit": Case(mint(CORP, headers={"crit": ["exp"], "exp": 1}), R.TOKEN_CRIT_UNSUPPORTED),
    # algorithms
    "alg_none": Case(_alg_none(), R.ALGORITHM_NOT_ALLOWED),
    "alg_none_with_signature": Case(_alg_none() + b64url(b"sig"), R.ALGORITHM_NOT_ALLOWED),
    "empty_signature": Case(mint(CORP).rsplit(".", 1)[0] + ".", R.SIGNATURE_INVALID),
    "hs256_with_public_key": Case(_hs256_with_public_pem(), R.ALGORITHM_NOT_ALLOWED),
    "alg_not_in_issuer_allow_list": Case(mint(CORP, alg="PS256"), R.ALGORITHM_NOT_ALLOWED),
    # issuer and keys
    "unknown_issuer": Case(mint(CORP, iss="https://evil.test"), R.ISSUER_UNKNOWN),
    "issuer_missing": Case(mint(CORP, drop=("iss",)), R.ISSUER_MISSING),
    "issuer_not_a_string": Case(mint(CORP, iss=["x"]), R.CLAIM_TYPE_INVALID),
    "unknown_kid": Case(mint(CORP, headers={"kid": "nope"}), R.KEY_UNKNOWN),
    "path_traversal_kid": Case(mint(CORP, headers={"kid": "../../etc/passwd"}), R.KEY_UNKNOWN),
    "sql_kid": Case(mint(CORP, headers={"kid": "' OR 1=1 --"}), R.KEY_UNKNOWN),
    "url_kid": Case(mint(CORP, headers={"kid": "https://evil.test/k"}), R.KEY_UNKNOWN),
    "huge_kid": Case(mint(CORP, headers={"kid": "k" * 10_000}), R.TOKEN_HEADER_INVALID),
    "signed_by_rogue_key_under_real_kid": Case(mint(CORP, key=ROGUE_RSA), R.SIGNATURE_INVALID),
    "tampered_payload": Case(_tampered(), R.SIGNATURE_INVALID),
    "issuer_a_signed_with_issuer_b_key": Case(
        mint(CORP, key=PSS.key, headers={"kid": PSS.kid}), R.KEY_UNKNOWN
    ),
    "embedded_jwk_ignored": Case(_embedded_jwk(), R.SIGNATURE_INVALID),
    "jku_ignored": Case(_jku(), R.SIGNATURE_INVALID),
    # registered claims
    "expired": Case(mint(CORP, exp=NOW - 3600), R.TOKEN_EXPIRED),
    "exp_missing": Case(mint(CORP, drop=("exp",)), R.EXPIRATION_MISSING),
    "exp_numeric_string": Case(mint(CORP, exp=str(NOW + 600)), R.CLAIM_TYPE_INVALID),
    "not_yet_valid": Case(mint(CORP, nbf=NOW + 3600), R.TOKEN_NOT_YET_VALID),
    # an integer no float holds: a 401 before any signature check, never a 500
    "exp_10_to_the_400": Case(mint(CORP, exp=10**400), R.CLAIM_TYPE_INVALID),
    "nbf_10_to_the_400": Case(mint(CORP, nbf=10**400), R.CLAIM_TYPE_INVALID),
    "iat_10_to_the_400": Case(mint(CORP, iat=10**400), R.CLAIM_TYPE_INVALID),
    "exp_10_to_the_400_forged": Case(mint(CORP, key=ROGUE_RSA, exp=10**400), R.CLAIM_TYPE_INVALID),
    "issued_in_future": Case(mint(CORP, iat=NOW + 3600), R.TOKEN_ISSUED_IN_FUTURE),
    "wrong_audience": Case(mint(CORP, aud="billing-api"), R.AUDIENCE_MISMATCH),
    "audience_substring": Case(mint(CORP, aud="orders"), R.AUDIENCE_MISMATCH),
    "audience_superstring": Case(mint(CORP, aud="orders-api-v2"), R.AUDIENCE_MISMATCH),
    "audience_number": Case(mint(CORP, aud=42), R.AUDIENCE_MISMATCH),
    "audience_missing": Case(mint(CORP, drop=("aud",)), R.AUDIENCE_MISMATCH),
    # policy rules
    "missing_scope": Case(mint(CORP, scope="profile"), R.SCOPE_MISSING),
    "scope_as_prefix_only": Case(mint(CORP, scope="orders:readonly"), R.SCOPE_MISSING),
    "issuer_not_on_route": Case(mint(PARTNER), R.ISSUER_NOT_ALLOWED, method="POST"),
    "email_not_verified": Case(mint(CORP, email_verified=False), R.CLAIM_MISMATCH, method="POST"),
    "email_verified_as_string": Case(
        mint(CORP, email_verified="true"), R.CLAIM_MISMATCH, method="POST"
    ),
    "not_in_admin_group": Case(mint(CORP), R.CLAIM_MISMATCH, path="/admin"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_decision_table(name: str, authorizer: Authorizer) -> None:
    case: Case = CASES[name]
    headers = dict(case.headers)
    if case.raw_authorization is not None:
        headers["authorization"] = case.raw_authorization
    decision = authorizer.check(request(case.path, case.method, case.token, headers))
    if case.expect is None:
        assert isinstance(decision, Allow), decision
    else:
        assert isinstance(decision, Deny), decision
        assert decision.reason is case.expect, decision


def test_allow_maps_claims_to_headers_and_strips_identity_headers(authorizer: Authorizer) -> None:
    decision = authorizer.check(request(token=mint(CORP, email=None)))
    assert isinstance(decision, Allow)
    headers = dict(decision.headers)
    assert headers == {
        "x-user-id": "user-of-corp",
        "x-tenant-id": "tenant-corp",
        "x-groups": "staff, buyers",
    }
    # email is null: not injected, and removed so a client's own value cannot pass
    assert "x-user-email" in decision.remove
    assert (decision.route, decision.issuer, decision.subject) == (
        "read-orders",
        "corp",
        "user-of-corp",
    )


def test_anonymous_route_removes_every_identity_header(authorizer: Authorizer) -> None:
    decision = authorizer.check(request(path="/healthz", headers={"x-user-id": "spoofed"}))
    assert isinstance(decision, Allow)
    assert decision.headers == ()
    assert set(decision.remove) == {
        *("x-user-id", "x-user-email", "x-tenant-id", "x-groups", "x-ext-authz-dry-run")
    }


def test_insufficient_scope_names_the_route_scopes(authorizer: Authorizer) -> None:
    decision = authorizer.check(request(token=mint(CORP, scope="profile")))
    assert isinstance(decision, Deny)
    assert decision.scopes == ("orders:read",)


def test_no_route_is_a_deny(tmp_path: Path) -> None:
    from tests.support.tokens import policy_yaml

    routes = "routes:\n  - name: only\n    match: { path: /only }\n    allow: anonymous\n"
    policy = compile_policy_text(policy_yaml(CORP, routes=routes), label="p", base_dir=tmp_path)
    authorizer = Authorizer(lambda: policy, StaticKeys.of(policy), FixedClock(NOW))
    decision = authorizer.check(request(path="/other", token=mint(CORP)))
    assert isinstance(decision, Deny)
    assert decision.reason is R.NO_ROUTE


class ScriptedKeys:
    """A key provider whose snapshots and refetch answers a test controls."""

    def __init__(self, current: KeySet | None, after_refetch: KeySet | None = None) -> None:
        self.keys = current
        self.after_refetch = after_refetch
        self.refetches = 0
        self.cooldown = False
        self.fail = False
        self._lock = threading.Lock()

    def current(self, issuer: str) -> IssuerKeys:
        if self.fail:
            raise RuntimeError("key store exploded")
        return IssuerKeys(self.keys, KeyStatus.FRESH if self.keys else KeyStatus.FAILED)

    def refetch(self, issuer: str) -> IssuerKeys | None:
        with self._lock:
            self.refetches += 1
        if self.cooldown:
            return None
        if self.after_refetch is not None:
            self.keys = self.after_refetch
        return self.current(issuer)


def _remote_policy(tmp_path: Path) -> Policy:
    text = f"""\
issuers:
  corp:
    issuer: "{CORP.iss}"
    jwks_uri: http://127.0.0.1:1/jwks.json
    audiences: [orders-api]
    algorithms: [RS256]
routes:
  - name: read
    match: {{ path_prefix: / }}
    require: {{ scopes: [orders:read] }}
    headers: {{ x-user-id: sub }}
"""
    return compile_policy_text(text, label="p", base_dir=tmp_path)


def _keyset(*jwks: dict[str, Any]) -> KeySet:
    return parse_jwks({"keys": list(jwks)}).key_set


def test_unknown_kid_triggers_one_refetch_and_then_verifies(tmp_path: Path) -> None:
    policy = _remote_policy(tmp_path)
    rotated = public_jwk(ROGUE_RSA, kid="corp-2", alg="RS256")
    keys = ScriptedKeys(_keyset(CORP.public_jwk()), _keyset(CORP.public_jwk(), rotated))
    authorizer = Authorizer(lambda: policy, keys, FixedClock(NOW))
    token = mint(CORP, key=ROGUE_RSA, headers={"kid": "corp-2"})
    assert isinstance(authorizer.check(request(token=token)), Allow)
    assert keys.refetches == 1


def test_unknown_kid_during_cooldown_is_unknown_key_without_waiting(tmp_path: Path) -> None:
    policy = _remote_policy(tmp_path)
    keys = ScriptedKeys(_keyset(CORP.public_jwk()))
    keys.cooldown = True
    authorizer = Authorizer(lambda: policy, keys, FixedClock(NOW))
    decision = authorizer.check(request(token=mint(CORP, headers={"kid": "corp-9"})))
    assert isinstance(decision, Deny)
    assert decision.reason is R.KEY_UNKNOWN


def test_issuer_without_keys_is_503_never_allow(tmp_path: Path) -> None:
    policy = _remote_policy(tmp_path)
    keys = ScriptedKeys(None)
    authorizer = Authorizer(lambda: policy, keys, FixedClock(NOW))
    decision = authorizer.check(request(token=mint(CORP)))
    assert isinstance(decision, Deny)
    assert decision.reason is R.KEYS_UNAVAILABLE
    assert keys.refetches == 1


def test_unknown_issuer_never_touches_keys(tmp_path: Path) -> None:
    policy = _remote_policy(tmp_path)
    keys = ScriptedKeys(None)
    authorizer = Authorizer(lambda: policy, keys, FixedClock(NOW))
    decision = authorizer.check(request(token=mint(CORP, iss="https://unknown.test")))
    assert isinstance(decision, Deny)
    assert decision.reason is R.ISSUER_UNKNOWN
    assert keys.refetches == 0


def test_internal_error_is_a_logged_deny(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    policy = _remote_policy(tmp_path)
    keys = ScriptedKeys(_keyset(CORP.public_jwk()))
    keys.fail = True
    authorizer = Authorizer(lambda: policy, keys, FixedClock(NOW))
    decision = authorizer.check(request(token=mint(CORP)))
    assert isinstance(decision, Deny)
    assert decision.reason is R.INTERNAL_ERROR
    assert "internal error" in caplog.text


def test_verified_token_cache_serves_repeats_and_respects_key_removal(tmp_path: Path) -> None:
    policy = _remote_policy(tmp_path)
    clock = FixedClock(NOW)
    keys = ScriptedKeys(_keyset(CORP.public_jwk()))
    cache = VerifiedTokenCache(clock)
    authorizer = Authorizer(lambda: policy, keys, clock, cache)
    token = mint(CORP)
    first: Decision = authorizer.check(request(token=token))
    second: Decision = authorizer.check(request(token=token))
    assert isinstance(first, Allow)
    assert second == first
    assert (cache.hits, cache.misses) == (1, 1)
    # the issuer drops the key: the cached verification no longer counts
    keys.keys = _keyset(public_jwk(ROGUE_RSA, kid="corp-2", alg="RS256"))
    keys.cooldown = True
    third = authorizer.check(request(token=token))
    assert isinstance(third, Deny)
    assert third.reason is R.KEY_UNKNOWN


def test_verified_token_cache_entry_expires_with_the_token(tmp_path: Path) -> None:
    policy = _remote_policy(tmp_path)
    clock = FixedClock(NOW)
    keys = ScriptedKeys(_keyset(CORP.public_jwk()))
    cache = VerifiedTokenCache(clock)
    authorizer = Authorizer(lambda: policy, keys, clock, cache)
    token = mint(CORP, exp=NOW + 10)
    assert isinstance(authorizer.check(request(token=token)), Allow)
    clock.advance(10 + 60)  # past exp plus the 60 s leeway
    decision = authorizer.check(request(token=token))
    assert isinstance(decision, Deny)
    assert decision.reason is R.TOKEN_EXPIRED


def test_pyjwt_is_independent_of_the_server_library() -> None:
    """The fixtures really are minted by PyJWT and verify with PyJWT."""
    claims = jwt.decode(
        mint(CORP),
        CORP.key.public_key(),
        algorithms=["RS256"],
        audience="orders-api",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["sub"] == "user-of-corp"


# an issuer that names its token types (RFC 9068) ----------------------------------


def _typed_policy(tmp_path: Path, typ: str) -> Policy:
    from tests.support.tokens import policy_yaml

    text = policy_yaml(CORP, PARTNER).replace(
        f"    issuer: {CORP.iss!r}".replace("'", '"'),
        f'    issuer: "{CORP.iss}"\n    typ: {typ}',
    )
    assert "typ:" in text
    return compile_policy_text(text, label="policy.yaml", base_dir=tmp_path)


TYPED: dict[str, tuple[dict[str, Any], DenialReason | None]] = {
    "at_jwt": ({"typ": "at+jwt"}, None),
    "application_at_jwt": ({"typ": "application/at+jwt"}, None),
    "upper_case": ({"typ": "AT+JWT"}, None),
    "mixed_case_with_prefix": ({"typ": "Application/At+JWT"}, None),
    "id_token_jwt": ({"typ": "JWT"}, R.TOKEN_TYPE_NOT_ALLOWED),
    "logout_token": ({"typ": "logout+jwt"}, R.TOKEN_TYPE_NOT_ALLOWED),
    "no_typ": ({}, R.TOKEN_TYPE_NOT_ALLOWED),
    "typ_not_a_string": ({"typ": ["at+jwt"]}, R.TOKEN_TYPE_NOT_ALLOWED),
    "other_prefix": ({"typ": "text/at+jwt"}, R.TOKEN_TYPE_NOT_ALLOWED),
}


@pytest.mark.parametrize("name", list(TYPED))
def test_issuer_token_types(name: str, tmp_path: Path) -> None:
    policy = _typed_policy(tmp_path, "[at+jwt]")
    assert policy.issuers["corp"].token_types == frozenset({"application/at+jwt"})
    authorizer = Authorizer(lambda: policy, StaticKeys.of(policy), FixedClock(NOW))
    header, expect = TYPED[name]
    decision = authorizer.check(request(token=mint(CORP, headers=header)))
    if expect is None:
        assert isinstance(decision, Allow), decision
    else:
        assert isinstance(decision, Deny) and decision.reason is expect, decision
    # an issuer without `typ` takes any type
    assert isinstance(authorizer.check(request(token=mint(PARTNER, headers=header))), Allow)


def test_token_types_written_with_the_prefix_and_in_upper_case(tmp_path: Path) -> None:
    policy = _typed_policy(tmp_path, "[Application/AT+JWT, jwt]")
    assert policy.issuers["corp"].token_types == frozenset(
        {"application/at+jwt", "application/jwt"}
    )


@pytest.mark.parametrize("typ", ["[]", '["at jwt"]', "at+jwt", "[7]"])
def test_token_types_refused_at_load(typ: str, tmp_path: Path) -> None:
    from ext_authz.policy.loader import PolicyError

    with pytest.raises(PolicyError) as caught:
        _typed_policy(tmp_path, typ)
    assert any(p.field.endswith("typ") or ".typ" in p.field for p in caught.value.problems), (
        caught.value.problems
    )
