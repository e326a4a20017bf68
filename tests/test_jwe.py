"""Encrypted tokens (JWE) through the whole pipeline, minted by jwcrypto around PyJWT JWS.

The server decrypts with joserfc, so every allow below is two independent
implementations agreeing. Tables of named cases over the named keys of
`tests.support.jwe_tokens`; every refusal asserts its exact `DenialReason`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import pytest
from jwcrypto import jwk

from ext_authz import algorithms
from ext_authz.authorizer import Authorizer
from ext_authz.decision import Allow, Decision, Deny
from ext_authz.envoy.response import check_response
from ext_authz.errors import DenialReason, Denied
from ext_authz.explain import explain
from ext_authz.keys.decryption_keys import DecryptionKeyError, parse_decryption_jwks
from ext_authz.policy import schema
from ext_authz.policy.loader import PolicyError, PolicyProblem, compile_policy_text
from ext_authz.policy.model import Policy
from ext_authz.request import RequestView
from ext_authz.tokens.cache import VerifiedTokenCache
from ext_authz.tokens.decrypt import decrypt_token
from tests.support.doubles import FixedClock, StaticKeys
from tests.support.jwe_tokens import (
    CEK_BYTES,
    CIPHERTEXT,
    CONTENT_ENCRYPTIONS,
    DIR128,
    DIR256,
    DIR512,
    EC_P256,
    EC_P384,
    ECDH_ALGORITHMS,
    ECDH_KEYS,
    ENCRYPTED_KEY,
    IV,
    KEY_MANAGEMENT_ALGORITHMS,
    KW128,
    KW256,
    PASSWORD,
    POLICY_KEYS,
    ROGUE_KW256,
    ROGUE_RSA_ENC,
    RSA_ENC,
    RSA_ENC_2,
    SHARED_CORP,
    SHARED_PARTNER,
    TAG,
    X25519_ENC,
    DecryptionTestKey,
    b64url_decode,
    b64url_encode,
    decryption_jwks,
    decryption_yaml,
    dir_key,
    encrypt,
    encrypt_claims,
    encrypt_nested,
    flip_last_bit,
    header_of,
    json_serialization,
    jwe_policy_yaml,
    segment,
    with_header,
    with_segment,
    write_decryption_jwks,
)
from tests.support.tokens import (
    AUDIENCE,
    CORP,
    EDGE,
    NOW,
    PARTNER,
    PSS,
    ROGUE_RSA,
    good_claims,
    mint,
    unsigned,
)

if TYPE_CHECKING:
    from tests.support.tokens import TestIssuer

R = DenialReason
ISSUERS = (CORP, PARTNER, EDGE, PSS)
UNSIGNED_KEYS = {CORP.name: [SHARED_CORP.kid], PARTNER.name: [SHARED_PARTNER.kid]}


# helpers -----------------------------------------------------------------------


def compile_text(text: str, base_dir: Path) -> Policy:
    return compile_policy_text(text, label="policy.yaml", base_dir=base_dir)


def authorizer_for(policy: Policy, cache: VerifiedTokenCache | None = None) -> Authorizer:
    keys = StaticKeys.of(policy)
    return Authorizer(lambda: policy, keys, FixedClock(NOW), cache)


def request(
    token: str | None, path: str = "/api/orders", method: str = "GET", raw: str | None = None
) -> RequestView:
    headers = {}
    if raw is not None:
        headers["authorization"] = raw
    elif token is not None:
        headers["authorization"] = f"Bearer {token}"
    return RequestView(method=method, path=path, host="api.test", headers=headers)


def expect_deny(decision: Decision, reason: DenialReason) -> Deny:
    assert isinstance(decision, Deny), f"accepted, expected {reason.value}: {decision}"
    assert decision.reason is reason, decision
    return decision


def expected_headers(issuer: TestIssuer) -> dict[str, str]:
    return {
        "x-user-id": f"user-of-{issuer.name}",
        "x-user-email": f"someone@{issuer.name}.test",
        "x-tenant-id": f"tenant-{issuer.name}",
        "x-groups": "staff, buyers",
    }


def expect_allow(decision: Decision, issuer: TestIssuer) -> Allow:
    assert isinstance(decision, Allow), decision
    assert decision.issuer == issuer.name
    assert dict(decision.headers) == expected_headers(issuer)
    return decision


def line_after(text: str, anchor: str, needle: str) -> int:
    """The line of the first `needle` after the line holding `anchor`."""
    start = line_of(text, anchor)
    rest = "\n".join(text.splitlines()[start:])
    return start + line_of(rest, needle)


def problems_of(text: str, base_dir: Path) -> list[PolicyProblem]:
    with pytest.raises(PolicyError) as caught:
        compile_text(text, base_dir)
    return caught.value.problems


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first line of `text` that contains `needle`."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the policy text")


# the shared policy: every key and algorithm, keys from a jwks_file ------------------


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    base = tmp_path_factory.mktemp("jwe-policy")
    write_decryption_jwks(base / "keys" / "decrypt.jwks.json", *POLICY_KEYS)
    text = jwe_policy_yaml(
        *ISSUERS,
        decryption=decryption_yaml(jwks_file="keys/decrypt.jwks.json"),
        unsigned_keys=UNSIGNED_KEYS,
    )
    return compile_text(text, base)


@pytest.fixture(scope="module")
def authorizer(policy: Policy) -> Authorizer:
    return authorizer_for(policy)


def test_the_schema_names_the_rows_of_the_algorithm_registry() -> None:
    """One table (`ext_authz.algorithms`); the schema's `Literal`s must list its rows."""
    assert get_args(schema.SignatureAlgorithm) == algorithms.SIGNATURE_ALGORITHMS
    assert get_args(schema.KeyManagementAlgorithm) == algorithms.KEY_MANAGEMENT_ALGORITHMS
    assert get_args(schema.ContentEncryption) == algorithms.CONTENT_ENCRYPTIONS
    for enc, cek in CEK_BYTES.items():
        assert algorithms.CONTENT_ENCRYPTION[enc].cek_bytes == cek


def test_the_tests_cover_every_supported_algorithm() -> None:
    """A new algorithm in the schema must come with its interop cases here."""
    assert set(KEY_MANAGEMENT_ALGORITHMS) == set(schema.KEY_MANAGEMENT_ALGORITHMS)
    assert set(CONTENT_ENCRYPTIONS) == set(schema.CONTENT_ENCRYPTIONS)


# interop matrix ------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    alg: str
    key: DecryptionTestKey
    enc: str
    issuer: TestIssuer

    @property
    def id(self) -> str:
        return f"{self.alg}-{self.key.name}-{self.enc}"


def _matrix() -> list[Pair]:
    key_pairs: list[tuple[str, DecryptionTestKey]] = [
        ("RSA-OAEP", RSA_ENC),
        ("RSA-OAEP-256", RSA_ENC),
    ]
    key_pairs += [(alg, key) for alg in ECDH_ALGORITHMS for key in ECDH_KEYS]
    key_pairs += [("A128KW", KW128), ("A256KW", KW256)]
    pairs: list[Pair] = []
    for enc in CONTENT_ENCRYPTIONS:
        for alg, key in [*key_pairs, ("dir", dir_key(enc))]:
            issuer = ISSUERS[len(pairs) % len(ISSUERS)]  # every inner signature alg too
            pairs.append(Pair(alg, key, enc, issuer))
    return pairs


MATRIX = _matrix()


def test_matrix_is_complete() -> None:
    seen = {(p.alg, p.enc) for p in MATRIX}
    assert seen == {(a, e) for a in KEY_MANAGEMENT_ALGORITHMS for e in CONTENT_ENCRYPTIONS}
    for alg in ECDH_ALGORITHMS:
        for enc in CONTENT_ENCRYPTIONS:
            curves = {p.key.name for p in MATRIX if (p.alg, p.enc) == (alg, enc)}
            assert curves == {"p256", "p384", "x25519"}
    assert {p.key.name for p in MATRIX if p.alg == "dir"} == {"dir128", "dir256", "dir512"}


@pytest.mark.parametrize("pair", MATRIX, ids=[p.id for p in MATRIX])
def test_nested_jwe_is_allowed_and_maps_inner_claims(pair: Pair, authorizer: Authorizer) -> None:
    token = encrypt_nested(mint(pair.issuer), pair.key.public_jwk(), pair.alg, pair.enc)
    assert header_of(token)["kid"] == pair.key.kid
    expect_allow(authorizer.check(request(token)), pair.issuer)


KIDLESS = [
    ("RSA-OAEP-256", RSA_ENC, "A256GCM"),
    *[(alg, key, "A256GCM") for alg in ECDH_ALGORITHMS for key in ECDH_KEYS],
    ("A128KW", KW128, "A128CBC-HS256"),
    ("A256KW", KW256, "A256GCM"),
    ("dir", DIR128, "A128GCM"),
    ("dir", DIR256, "A128CBC-HS256"),
    ("dir", DIR512, "A256CBC-HS512"),
]


@pytest.mark.parametrize(
    ("alg", "key", "enc"), KIDLESS, ids=[f"{alg}-{key.name}-{enc}" for alg, key, enc in KIDLESS]
)
def test_without_kid_the_key_is_found_among_keys_of_its_type(
    alg: str, key: DecryptionTestKey, enc: str, authorizer: Authorizer
) -> None:
    token = encrypt_nested(mint(CORP), key.public_jwk(), alg, enc, kid=None)
    assert "kid" not in header_of(token)
    expect_allow(authorizer.check(request(token)), CORP)


def test_inline_jwks_policy_decrypts(tmp_path: Path) -> None:
    text = jwe_policy_yaml(
        CORP,
        decryption=decryption_yaml(
            keys=[EC_P256], algorithms=["ECDH-ES+A256KW"], encryptions=["A256GCM"]
        ),
    )
    authorizer = authorizer_for(compile_text(text, tmp_path))
    token = encrypt_nested(mint(CORP), EC_P256.public_jwk(), "ECDH-ES+A256KW", "A256GCM")
    expect_allow(authorizer.check(request(token)), CORP)


# key rotation --------------------------------------------------------------------


def _rotation_authorizer(tmp_path: Path, *keys: DecryptionTestKey) -> Authorizer:
    text = jwe_policy_yaml(
        CORP,
        decryption=decryption_yaml(keys=keys, algorithms=["RSA-OAEP-256"], encryptions=["A256GCM"]),
    )
    return authorizer_for(compile_text(text, tmp_path))


@pytest.mark.parametrize("key", [RSA_ENC, RSA_ENC_2], ids=["old", "new"])
@pytest.mark.parametrize("with_kid", [True, False], ids=["kid", "no-kid"])
def test_rotation_both_keys_decrypt(tmp_path: Path, key: DecryptionTestKey, with_kid: bool) -> None:
    authorizer = _rotation_authorizer(tmp_path, RSA_ENC, RSA_ENC_2)
    kid = key.kid if with_kid else None
    token = encrypt_nested(mint(CORP), key.public_jwk(), "RSA-OAEP-256", "A256GCM", kid=kid)
    expect_allow(authorizer.check(request(token)), CORP)


def test_rotation_removed_key_is_refused(tmp_path: Path) -> None:
    authorizer = _rotation_authorizer(tmp_path, RSA_ENC_2)
    old = RSA_ENC.public_jwk()
    with_kid = encrypt_nested(mint(CORP), old, "RSA-OAEP-256", "A256GCM")
    without_kid = encrypt_nested(mint(CORP), old, "RSA-OAEP-256", "A256GCM", kid=None)
    expect_deny(authorizer.check(request(with_kid)), R.DECRYPTION_KEY_UNKNOWN)
    expect_deny(authorizer.check(request(without_kid)), R.DECRYPTION_FAILED)
    current = encrypt_nested(mint(CORP), RSA_ENC_2.public_jwk(), "RSA-OAEP-256", "A256GCM")
    expect_allow(authorizer.check(request(current)), CORP)


# refusals ------------------------------------------------------------------------


def _nested(
    alg: str = "RSA-OAEP-256",
    enc: str = "A256GCM",
    key: DecryptionTestKey = RSA_ENC,
    inner: str | None = None,
    **options: Any,
) -> str:
    return encrypt_nested(inner or mint(CORP), key.public_jwk(), alg, enc, **options)


def _edited(index: int, edit: Callable[[bytes], bytes], **nested: Any) -> str:
    token = _nested(**nested)
    return with_segment(token, index, edit(segment(token, index)))


def _nested_jwe_in_jwe(cty: str | None) -> str:
    inner = _nested()
    return encrypt_nested(inner, RSA_ENC.public_jwk(), "RSA-OAEP-256", "A256GCM", cty=cty)


def _duplicate_alg_header() -> str:
    token = _nested("dir", "A256GCM", DIR256)
    raw = b'{"alg":"dir","enc":"A256GCM","kid":"enc-dir256","alg":"RSA-OAEP"}'
    return with_header(token, raw)


@dataclass(frozen=True)
class Refusal:
    token: str | None
    expect: DenialReason
    raw_authorization: str | None = None


REFUSALS: dict[str, Refusal] = {
    # algorithms refused whatever the policy says
    "rsa1_5": Refusal(_nested("RSA1_5", "A128GCM"), R.ENCRYPTION_NOT_ALLOWED),
    "rsa1_5_cbc": Refusal(_nested("RSA1_5", "A128CBC-HS256"), R.ENCRYPTION_NOT_ALLOWED),
    "pbes2_hs256_a128kw": Refusal(
        encrypt_nested(mint(CORP), PASSWORD.key, "PBES2-HS256+A128KW", "A128GCM"),
        R.ENCRYPTION_NOT_ALLOWED,
    ),
    "a128gcmkw": Refusal(_nested("A128GCMKW", "A128GCM", KW128), R.ENCRYPTION_NOT_ALLOWED),
    "a192gcm_enc": Refusal(_nested(enc="A192GCM"), R.ENCRYPTION_NOT_ALLOWED),
    "zip_def": Refusal(_nested(extra_header={"zip": "DEF"}), R.TOKEN_COMPRESSED),
    "unknown_crit": Refusal(
        _nested(extra_header={"crit": ["exp"], "exp": NOW + 60}), R.TOKEN_CRIT_UNSUPPORTED
    ),
    # the segments, edited by hand
    "gcm_tag_truncated": Refusal(_edited(TAG, lambda t: t[:-1]), R.TOKEN_MALFORMED),
    "gcm_tag_truncated_to_8": Refusal(_edited(TAG, lambda t: t[:8]), R.TOKEN_MALFORMED),
    "gcm_tag_extended": Refusal(_edited(TAG, lambda t: t + b"\x00"), R.TOKEN_MALFORMED),
    "gcm_tag_missing": Refusal(_edited(TAG, lambda t: b""), R.TOKEN_MALFORMED),
    "gcm_tag_modified": Refusal(_edited(TAG, flip_last_bit), R.DECRYPTION_FAILED),
    "cbc_tag_truncated": Refusal(
        _edited(TAG, lambda t: t[:16], enc="A256CBC-HS512"), R.TOKEN_MALFORMED
    ),
    "cbc_tag_modified": Refusal(
        _edited(TAG, flip_last_bit, enc="A128CBC-HS256"), R.DECRYPTION_FAILED
    ),
    "gcm_iv_too_long": Refusal(_edited(IV, lambda iv: iv + b"\x00" * 4), R.TOKEN_MALFORMED),
    "gcm_iv_too_short": Refusal(_edited(IV, lambda iv: iv[:8]), R.TOKEN_MALFORMED),
    "cbc_iv_too_short": Refusal(
        _edited(IV, lambda iv: iv[:12], enc="A128CBC-HS256"), R.TOKEN_MALFORMED
    ),
    "iv_modified": Refusal(_edited(IV, flip_last_bit), R.DECRYPTION_FAILED),
    "ciphertext_modified": Refusal(_edited(CIPHERTEXT, flip_last_bit), R.DECRYPTION_FAILED),
    "encrypted_key_modified": Refusal(
        _edited(ENCRYPTED_KEY, flip_last_bit, alg="A256KW", key=KW256), R.DECRYPTION_FAILED
    ),
    "encrypted_key_missing": Refusal(_edited(ENCRYPTED_KEY, lambda k: b""), R.TOKEN_MALFORMED),
    "encrypted_key_with_dir": Refusal(
        _edited(ENCRYPTED_KEY, lambda k: b"\x01" * 40, alg="dir", key=DIR256),
        R.TOKEN_MALFORMED,
    ),
    "header_changed_after_encryption": Refusal(
        with_header(
            _nested(),
            json.dumps({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": RSA_ENC.kid}).encode(),
        ),
        R.DECRYPTION_FAILED,
    ),
    "header_alg_not_a_string": Refusal(
        with_header(_nested(), b'{"alg":["RSA-OAEP-256"],"enc":"A256GCM"}'),
        R.TOKEN_HEADER_INVALID,
    ),
    "header_duplicate_alg": Refusal(_duplicate_alg_header(), R.TOKEN_DUPLICATE_MEMBER),
    "header_kid_not_a_string": Refusal(
        with_header(_nested(), b'{"alg":"RSA-OAEP-256","enc":"A256GCM","kid":7}'),
        R.TOKEN_HEADER_INVALID,
    ),
    "header_over_4k": Refusal(
        _nested(extra_header={"x-padding": "p" * 5000}), R.TOKEN_HEADER_INVALID
    ),
    "token_over_16k": Refusal(_nested(inner=mint(CORP, blob="b" * 16_000)), R.TOKEN_TOO_LARGE),
    # keys
    "kid_of_no_key": Refusal(_nested(kid="enc-rsa-9"), R.DECRYPTION_KEY_UNKNOWN),
    "kid_of_a_key_of_another_type": Refusal(_nested(kid=EC_P256.kid), R.DECRYPTION_KEY_UNKNOWN),
    "kid_of_a_dir_key_of_another_size": Refusal(
        _nested("dir", "A256GCM", DIR256, kid=DIR128.kid), R.DECRYPTION_KEY_UNKNOWN
    ),
    "encrypted_to_a_rogue_key_under_our_kid": Refusal(
        _nested(key=ROGUE_RSA_ENC), R.DECRYPTION_FAILED
    ),
    "wrapped_with_a_rogue_secret_under_our_kid": Refusal(
        _nested("A256KW", key=ROGUE_KW256), R.DECRYPTION_FAILED
    ),
    # formats
    # a comma in the header is two credentials to us: refused before any parsing
    "json_serialization": Refusal(
        None,
        R.AUTHORIZATION_MULTIPLE,
        raw_authorization=f"Bearer {json_serialization(_nested())}",
    ),
    "json_serialization_one_member": Refusal(
        None, R.AUTHORIZATION_MALFORMED, raw_authorization='Bearer {"ciphertext":"AAAA"}'
    ),
    "json_serialization_base64url": Refusal(
        b64url_encode(json_serialization(_nested()).encode()), R.TOKEN_MALFORMED
    ),
    "four_segments": Refusal(_nested().rsplit(".", 1)[0], R.TOKEN_MALFORMED),
    "six_segments": Refusal(_nested() + ".AAAA", R.TOKEN_MALFORMED),
    # what is inside
    "bare_claims_to_our_rsa_key": Refusal(
        encrypt_claims(good_claims(CORP), RSA_ENC.public_jwk(), "RSA-OAEP-256", "A256GCM"),
        R.UNSIGNED_ENCRYPTED_CLAIMS,
    ),
    "bare_claims_to_our_ec_key": Refusal(
        encrypt_claims(good_claims(CORP), EC_P384.public_jwk(), "ECDH-ES", "A128GCM"),
        R.UNSIGNED_ENCRYPTED_CLAIMS,
    ),
    "bare_claims_with_a_secret_of_no_issuer": Refusal(
        encrypt_claims(good_claims(CORP), KW256.public_jwk(), "A256KW", "A256GCM"),
        R.UNSIGNED_ENCRYPTED_CLAIMS,
    ),
    "bare_claims_with_another_issuers_secret": Refusal(
        encrypt_claims(good_claims(CORP), SHARED_PARTNER.public_jwk(), "A256KW", "A256GCM"),
        R.UNSIGNED_ENCRYPTED_CLAIMS,
    ),
    "bare_claims_with_own_secret_but_expired": Refusal(
        encrypt_claims(
            good_claims(CORP) | {"exp": NOW - 3600},
            SHARED_CORP.public_jwk(),
            "A256KW",
            "A256GCM",
        ),
        R.TOKEN_EXPIRED,
    ),
    "bare_claims_with_own_secret_of_unknown_issuer": Refusal(
        encrypt_claims(
            good_claims(CORP) | {"iss": "https://evil.test"},
            SHARED_CORP.public_jwk(),
            "A256KW",
            "A256GCM",
        ),
        R.ISSUER_UNKNOWN,
    ),
    "bare_claims_declared_jwt": Refusal(
        encrypt_claims(good_claims(CORP), SHARED_CORP.public_jwk(), "A256KW", "A256GCM", cty="JWT"),
        R.NESTED_TOKEN_INVALID,
    ),
    "cty_jwt_plaintext_not_a_jws": Refusal(
        encrypt(b"hello, world", RSA_ENC.public_jwk(), "RSA-OAEP-256", "A256GCM", cty="JWT"),
        R.NESTED_TOKEN_INVALID,
    ),
    "nested_jwe_in_jwe_declared_jwt": Refusal(_nested_jwe_in_jwe("JWT"), R.NESTED_TOKEN_INVALID),
    "nested_jwe_in_jwe_undeclared": Refusal(_nested_jwe_in_jwe(None), R.NESTED_TOKEN_INVALID),
    "nested_jwe_in_jwe_declared_json": Refusal(
        _nested_jwe_in_jwe("application/json"), R.NESTED_TOKEN_INVALID
    ),
    "plaintext_not_json_nor_jws": Refusal(
        encrypt(b"\xff\xfe", RSA_ENC.public_jwk(), "RSA-OAEP-256", "A256GCM"),
        R.TOKEN_PAYLOAD_INVALID,
    ),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusals(name: str, authorizer: Authorizer) -> None:
    case = REFUSALS[name]
    decision = authorizer.check(request(case.token, raw=case.raw_authorization))
    expect_deny(decision, case.expect)


def test_bare_claims_with_the_issuers_own_secret_are_allowed(authorizer: Authorizer) -> None:
    for issuer, key in ((CORP, SHARED_CORP), (PARTNER, SHARED_PARTNER)):
        token = encrypt_claims(good_claims(issuer), key.public_jwk(), "A256KW", "A256GCM")
        expect_allow(authorizer.check(request(token)), issuer)


def test_json_serialization_is_refused_by_the_decryptor_too(policy: Policy) -> None:
    with pytest.raises(Denied) as caught:
        decrypt_token(json_serialization(_nested()), policy.decryption)
    assert caught.value.reason is R.TOKEN_MALFORMED


# as certified OpenID providers mint them: claims replicated in the header ---------

PROVIDER_PAIRS = (
    ("RSA-OAEP-256", "A256GCM", RSA_ENC),
    ("RSA-OAEP", "A128CBC-HS256", RSA_ENC),
    ("ECDH-ES", "A256GCM", EC_P256),
    ("ECDH-ES+A256KW", "A256CBC-HS512", X25519_ENC),
    ("A256KW", "A256GCM", KW256),
    ("dir", "A256GCM", DIR256),
)


def _replicated(claims: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: claims[name] for name in names}


def _provider_token(
    alg: str = "RSA-OAEP-256",
    enc: str = "A256GCM",
    key: DecryptionTestKey = RSA_ENC,
    *,
    header: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """An access token as such a provider mints it: an `at+jwt` JWS, encrypted, with
    `iss`, `aud` and `sub` replicated in the JWE header and `cty: at+jwt`."""
    inner = mint(CORP, headers={"typ": "at+jwt"}, **claims)
    payload = good_claims(CORP) | claims
    replicated = _replicated(payload, "iss", "aud", "sub") | (header or {})
    return encrypt_nested(inner, key.public_jwk(), alg, enc, cty="at+jwt", extra_header=replicated)


@pytest.mark.parametrize(
    ("alg", "enc", "key"), PROVIDER_PAIRS, ids=[f"{a}-{e}" for a, e, _ in PROVIDER_PAIRS]
)
def test_replicated_claims_in_the_jwe_header_are_accepted(
    alg: str, enc: str, key: DecryptionTestKey, authorizer: Authorizer
) -> None:
    token = _provider_token(alg, enc, key)
    assert {"iss", "aud", "sub", "cty"} <= header_of(token).keys()
    expect_allow(authorizer.check(request(token)), CORP)


def test_every_registered_claim_may_be_replicated(authorizer: Authorizer) -> None:
    claims = good_claims(CORP) | {"jti": "a1b2", "aud": [AUDIENCE, "other-api"]}
    replicated = _replicated(claims, "iss", "sub", "aud", "exp", "nbf", "iat", "jti")
    token = _provider_token(header=replicated, jti="a1b2", aud=[AUDIENCE, "other-api"])
    expect_allow(authorizer.check(request(token)), CORP)


def test_replicated_claims_on_bare_encrypted_claims(authorizer: Authorizer) -> None:
    claims = good_claims(CORP)
    header = _replicated(claims, "iss", "aud")
    token = encrypt_claims(
        claims, SHARED_CORP.public_jwk(), "A256KW", "A256GCM", extra_header=header
    )
    expect_allow(authorizer.check(request(token)), CORP)
    lying = encrypt_claims(
        claims,
        SHARED_CORP.public_jwk(),
        "A256KW",
        "A256GCM",
        extra_header={"iss": PARTNER.iss},
    )
    expect_deny(authorizer.check(request(lying)), R.REPLICATED_CLAIM_MISMATCH)


REPLICATED_REFUSALS: dict[str, tuple[dict[str, Any], DenialReason]] = {
    # the header says one thing, the signed claims another
    "iss_differs": ({"iss": PARTNER.iss}, R.REPLICATED_CLAIM_MISMATCH),
    "aud_differs": ({"aud": "billing-api"}, R.REPLICATED_CLAIM_MISMATCH),
    "aud_list_vs_string": ({"aud": [AUDIENCE]}, R.REPLICATED_CLAIM_MISMATCH),
    "sub_differs": ({"sub": "admin"}, R.REPLICATED_CLAIM_MISMATCH),
    "exp_later_than_signed": ({"exp": NOW + 86400}, R.REPLICATED_CLAIM_MISMATCH),
    "exp_true_for_1": ({"exp": True}, R.TOKEN_HEADER_INVALID),
    "jti_absent_inside": ({"jti": "a1b2"}, R.REPLICATED_CLAIM_MISMATCH),
    # not a claim and not a JWE header parameter: the header's own refusal
    "unknown_member": ({"x-tenant": "t1"}, R.TOKEN_HEADER_INVALID),
    "iss_not_a_string": ({"iss": 7}, R.TOKEN_HEADER_INVALID),
    "aud_of_numbers": ({"aud": [1, 2]}, R.TOKEN_HEADER_INVALID),
    "exp_a_string": ({"exp": "tomorrow"}, R.TOKEN_HEADER_INVALID),
}


@pytest.mark.parametrize("name", list(REPLICATED_REFUSALS))
def test_replicated_claims_must_say_what_the_token_says(name: str, authorizer: Authorizer) -> None:
    header, expect = REPLICATED_REFUSALS[name]
    expect_deny(authorizer.check(request(_provider_token(header=header))), expect)


def test_a_refused_header_is_not_a_decryption_failure(policy: Policy) -> None:
    """The library's header refusal keeps its own reason: `decryption_failed` is only
    for the cryptography."""
    with pytest.raises(Denied) as caught:
        decrypt_token(_provider_token(header={"x-tenant": "t1"}), policy.decryption)
    assert caught.value.reason is R.TOKEN_HEADER_INVALID
    assert "t1" not in caught.value.detail


# the inner JWS: exactly the checks of a bare JWS --------------------------------

INNER_TOKENS: dict[str, tuple[str, DenialReason | None]] = {
    "good": (mint(CORP), None),
    "bad_signature": (mint(CORP, key=ROGUE_RSA), R.SIGNATURE_INVALID),
    "expired": (mint(CORP, exp=NOW - 3600), R.TOKEN_EXPIRED),
    "not_yet_valid": (mint(CORP, nbf=NOW + 3600), R.TOKEN_NOT_YET_VALID),
    "wrong_audience": (mint(CORP, aud="billing-api"), R.AUDIENCE_MISMATCH),
    "unknown_issuer": (mint(CORP, iss="https://evil.test"), R.ISSUER_UNKNOWN),
    "unknown_kid": (mint(CORP, headers={"kid": "nope"}), R.KEY_UNKNOWN),
    "alg_not_allowed": (mint(CORP, alg="PS256"), R.ALGORITHM_NOT_ALLOWED),
    "alg_none": (
        unsigned({"alg": "none", "kid": CORP.kid}, good_claims(CORP)),
        R.ALGORITHM_NOT_ALLOWED,
    ),
    "missing_scope": (mint(CORP, scope="profile"), R.SCOPE_MISSING),
}


@pytest.mark.parametrize("name", list(INNER_TOKENS))
def test_inner_jws_gets_the_same_verdict_as_a_bare_jws(name: str, authorizer: Authorizer) -> None:
    inner, expect = INNER_TOKENS[name]
    bare = authorizer.check(request(inner))
    nested = authorizer.check(request(_nested(inner=inner)))
    if expect is None:
        assert isinstance(bare, Allow)
        assert isinstance(nested, Allow)
        assert nested.headers == bare.headers
    else:
        expect_deny(bare, expect)
        expect_deny(nested, expect)


# requiring encryption -----------------------------------------------------------

SECURE_ROUTES = """\
routes:
  - name: secure
    match: { path_prefix: /secure }
    require: { encrypted: true, scopes: [orders:read] }
    headers: { x-user-id: sub }
  - name: read-orders
    match: { path_prefix: /api/orders }
    require: { scopes: [orders:read] }
    headers: { x-user-id: sub }
"""


@pytest.fixture
def strict_policy(tmp_path: Path) -> Policy:
    text = jwe_policy_yaml(
        CORP,
        PARTNER,
        decryption=decryption_yaml(keys=[RSA_ENC, SHARED_CORP]),
        require_encryption=[CORP.name],
        unsigned_keys={CORP.name: [SHARED_CORP.kid]},
        routes=SECURE_ROUTES,
    )
    return compile_text(text, tmp_path)


def test_issuer_requiring_encryption_refuses_its_signed_only_token(strict_policy: Policy) -> None:
    authorizer = authorizer_for(strict_policy)
    expect_deny(authorizer.check(request(mint(CORP))), R.ENCRYPTION_REQUIRED)
    for token in (
        _nested(),
        encrypt_claims(good_claims(CORP), SHARED_CORP.public_jwk(), "A256KW", "A256GCM"),
    ):
        decision = authorizer.check(request(token))
        assert isinstance(decision, Allow), decision
        assert decision.issuer == CORP.name
    # another issuer, without the requirement, is unaffected
    assert isinstance(authorizer.check(request(mint(PARTNER))), Allow)


def test_route_requiring_encryption(strict_policy: Policy) -> None:
    authorizer = authorizer_for(strict_policy)
    signed = mint(PARTNER)
    expect_deny(authorizer.check(request(signed, path="/secure")), R.ENCRYPTION_REQUIRED)
    nested = _nested(inner=signed)
    decision = authorizer.check(request(nested, path="/secure"))
    assert isinstance(decision, Allow), decision
    assert dict(decision.headers) == {"x-user-id": "user-of-partner"}


def test_the_inner_jws_lifted_out_of_a_cached_jwe_is_not_encrypted(
    strict_policy: Policy,
) -> None:
    cache = VerifiedTokenCache(FixedClock(NOW))
    authorizer = authorizer_for(strict_policy, cache)
    inner = mint(PARTNER)
    nested = _nested(inner=inner)
    for _ in range(2):
        assert isinstance(authorizer.check(request(nested, path="/secure")), Allow)
    for _ in range(2):
        expect_deny(authorizer.check(request(inner, path="/secure")), R.ENCRYPTION_REQUIRED)
    assert cache.hits == 2


def test_narrow_allow_lists(tmp_path: Path) -> None:
    text = jwe_policy_yaml(
        CORP,
        decryption=decryption_yaml(
            keys=[RSA_ENC, EC_P256], algorithms=["RSA-OAEP-256"], encryptions=["A256GCM"]
        ),
    )
    authorizer = authorizer_for(compile_text(text, tmp_path))
    expect_allow(authorizer.check(request(_nested("RSA-OAEP-256", "A256GCM"))), CORP)
    refused = {
        "alg_not_listed": _nested("RSA-OAEP", "A256GCM"),
        "ecdh_not_listed": _nested("ECDH-ES+A256KW", "A256GCM", EC_P256),
        "enc_not_listed": _nested("RSA-OAEP-256", "A128GCM"),
        "cbc_not_listed": _nested("RSA-OAEP-256", "A256CBC-HS512"),
    }
    for name, token in refused.items():
        decision = authorizer.check(request(token))
        assert isinstance(decision, Deny), name
        assert decision.reason is R.ENCRYPTION_NOT_ALLOWED, (name, decision)


def test_without_a_decryption_section_jwe_is_unsupported(tmp_path: Path) -> None:
    authorizer = authorizer_for(compile_text(jwe_policy_yaml(CORP, decryption=None), tmp_path))
    expect_deny(authorizer.check(request(_nested())), R.TOKEN_ENCRYPTED_UNSUPPORTED)


# one answer for every decryption failure ------------------------------------------

SAME_ANSWER = [
    "gcm_tag_truncated",
    "gcm_tag_modified",
    "iv_modified",
    "ciphertext_modified",
    "kid_of_no_key",
    "encrypted_to_a_rogue_key_under_our_kid",
    "rsa1_5",
    "zip_def",
    "unknown_crit",
    "header_alg_not_a_string",
    "bare_claims_to_our_rsa_key",
    "cty_jwt_plaintext_not_a_jws",
    "nested_jwe_in_jwe_declared_jwt",
]


def test_all_decryption_failures_get_the_same_client_response(authorizer: Authorizer) -> None:
    decisions = {name: authorizer.check(request(REFUSALS[name].token)) for name in SAME_ANSWER}
    decisions["bare_jws_bad_signature"] = authorizer.check(request(mint(CORP, key=ROGUE_RSA)))
    reasons = {name: d.reason for name, d in decisions.items() if isinstance(d, Deny)}
    assert len(reasons) == len(decisions), decisions
    assert len(set(reasons.values())) >= 8  # the precise reasons differ ...
    responses = {name: check_response(d) for name, d in decisions.items()}
    first = responses["gcm_tag_modified"]
    assert first.denied_response.status.code == 401
    for name, response in responses.items():  # ... the client's answer does not
        assert response.status == first.status, name
        assert response.denied_response.status == first.denied_response.status, name
        assert list(response.denied_response.headers) == list(first.denied_response.headers), name
        assert response.denied_response.body == first.denied_response.body, name
        assert response.dynamic_metadata == first.dynamic_metadata, name


# policy loading -----------------------------------------------------------------


def _decryption_policy(decryption: str, **options: Any) -> str:
    return jwe_policy_yaml(CORP, PARTNER, decryption=decryption, **options)


def _one_problem(text: str, tmp_path: Path, field: str, needle: str, fragment: str) -> None:
    problems = problems_of(text, tmp_path)
    line = line_after(text, "decryption:", needle)
    assert [(p.field, p.line) for p in problems] == [(field, line)], problems
    assert fragment in problems[0].message, problems[0]
    assert problems[0].file == "policy.yaml"


def test_missing_jwks_file_names_line_and_field(tmp_path: Path) -> None:
    text = _decryption_policy(decryption_yaml(jwks_file="keys/absent.jwks.json"))
    _one_problem(text, tmp_path, "decryption.jwks_file", "jwks_file:", "cannot read")


def _rsa_jwk_without_d() -> dict[str, Any]:
    entry = RSA_ENC.public_jwk()
    assert "d" not in entry
    return entry


def _rsa_1024() -> dict[str, Any]:
    key = DecryptionTestKey("small", "small", jwk.JWK.generate(kty="RSA", size=1024))
    return key.private_jwk()


def _rsa_1024_zero_padded_modulus() -> dict[str, Any]:
    entry = _rsa_1024()
    modulus = b64url_decode(entry["n"])
    entry["n"] = b64url_encode(bytes(128) + modulus)
    return entry


BAD_KEY_SETS: dict[str, tuple[list[dict[str, Any]], str]] = {
    "public_only_rsa": ([_rsa_jwk_without_d()], "private"),
    "public_only_ec": ([EC_P256.public_jwk()], "private"),
    "public_only_x25519": ([X25519_ENC.public_jwk()], "private"),
    "rsa_1024": ([_rsa_1024()], "2048"),
    # 256 bytes long, as a 2048-bit modulus is, but 1024 bits
    "rsa_1024_zero_padded_modulus": ([_rsa_1024_zero_padded_modulus()], "2048"),
    "duplicate_kid": (
        [RSA_ENC.private_jwk(), RSA_ENC_2.private_jwk() | {"kid": RSA_ENC.kid}],
        "kid",
    ),
    "use_sig": ([RSA_ENC.private_jwk() | {"use": "sig"}], "use"),
    "oct_of_24_bytes": ([{"kty": "oct", "kid": "k24", "k": b64url_encode(bytes(range(24)))}], "16"),
    "alg_rsa1_5_on_key": ([RSA_ENC.private_jwk() | {"alg": "RSA1_5"}], "alg"),
    "alg_of_another_key_type": ([RSA_ENC.private_jwk() | {"alg": "A256KW"}], "alg"),
    "empty_set": ([], "no key"),
}


@pytest.mark.parametrize("name", list(BAD_KEY_SETS))
def test_unusable_decryption_keys_stop_the_policy(name: str, tmp_path: Path) -> None:
    keys, fragment = BAD_KEY_SETS[name]
    document = {"keys": keys}
    inline = "decryption:\n  jwks: " + json.dumps(document) + "\n  algorithms: [RSA-OAEP-256]\n"
    inline += "  encryptions: [A256GCM]\n"
    _one_problem(_decryption_policy(inline), tmp_path, "decryption.jwks", "jwks:", fragment)
    with pytest.raises(DecryptionKeyError):
        parse_decryption_jwks(document)
    (tmp_path / "keys.json").write_text(json.dumps(document))
    from_file = _decryption_policy(decryption_yaml(jwks_file="keys.json"))
    _one_problem(from_file, tmp_path, "decryption.jwks_file", "jwks_file:", fragment)


def test_jwks_env_reads_the_keys_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXT_AUTHZ_TEST_DECRYPTION_JWKS", json.dumps(decryption_jwks(RSA_ENC)))
    text = _decryption_policy(decryption_yaml(jwks_env="EXT_AUTHZ_TEST_DECRYPTION_JWKS"))
    authorizer = authorizer_for(compile_text(text, tmp_path))
    expect_allow(authorizer.check(request(_nested())), CORP)


@pytest.mark.parametrize("value", [None, "", "{not json"], ids=["unset", "empty", "not-json"])
def test_jwks_env_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    name = "EXT_AUTHZ_TEST_DECRYPTION_JWKS"
    if value is None:
        monkeypatch.delenv(name, raising=False)
    else:
        monkeypatch.setenv(name, value)
    text = _decryption_policy(decryption_yaml(jwks_env=name))
    problems = problems_of(text, tmp_path)
    assert [(p.field, p.line) for p in problems] == [
        ("decryption.jwks_env", line_after(text, "decryption:", "jwks_env:"))
    ]
    assert name in problems[0].message


def test_two_key_sources_are_an_error(tmp_path: Path) -> None:
    write_decryption_jwks(tmp_path / "keys.json", RSA_ENC)
    text = _decryption_policy(decryption_yaml(keys=[RSA_ENC], jwks_file="keys.json"))
    problems = problems_of(text, tmp_path)
    assert [(p.field, p.line) for p in problems] == [("decryption", line_of(text, "decryption:"))]


SCHEMA_REFUSALS: dict[str, tuple[str, str]] = {
    # name: (decryption section, the field reported)
    "rsa1_5_listed": (
        decryption_yaml(keys=[RSA_ENC], algorithms=["RSA1_5", "RSA-OAEP-256"]),
        "decryption.algorithms[0]",
    ),
    "pbes2_listed": (
        decryption_yaml(keys=[RSA_ENC], algorithms=["RSA-OAEP-256", "PBES2-HS256+A128KW"]),
        "decryption.algorithms[1]",
    ),
    "gcmkw_listed": (
        decryption_yaml(keys=[KW128], algorithms=["A128GCMKW"]),
        "decryption.algorithms[0]",
    ),
    "a192gcm_listed": (
        decryption_yaml(keys=[RSA_ENC], encryptions=["A256GCM", "A192GCM"]),
        "decryption.encryptions[1]",
    ),
    "no_algorithms": (
        decryption_yaml(keys=[RSA_ENC], algorithms=[]),
        "decryption.algorithms",
    ),
}


@pytest.mark.parametrize("name", list(SCHEMA_REFUSALS))
def test_schema_refuses_unsupported_algorithms(name: str, tmp_path: Path) -> None:
    decryption, field = SCHEMA_REFUSALS[name]
    text = _decryption_policy(decryption)
    problems = problems_of(text, tmp_path)
    assert [p.field for p in problems] == [field], problems
    needle = "algorithms:" if "algorithms" in field else "encryptions:"
    assert problems[0].line == line_after(text, "decryption:", needle)


UNSIGNED_KEY_ERRORS: dict[str, tuple[dict[str, list[str]], str, str]] = {
    # name: (unsigned_encrypted_keys per issuer, the issuer reported, message fragment)
    "names_an_rsa_key": ({CORP.name: [RSA_ENC.kid]}, CORP.name, "not symmetric"),
    "names_an_ec_key": ({CORP.name: [EC_P256.kid]}, CORP.name, "not symmetric"),
    "names_an_unknown_kid": ({CORP.name: ["shared-nobody"]}, CORP.name, "no decryption key"),
    "same_secret_for_two_issuers": (
        {CORP.name: [SHARED_CORP.kid], PARTNER.name: [SHARED_CORP.kid]},
        PARTNER.name,
        "already",
    ),
}


@pytest.mark.parametrize("name", list(UNSIGNED_KEY_ERRORS))
def test_unsigned_encrypted_keys_are_checked(name: str, tmp_path: Path) -> None:
    owners, reported, fragment = UNSIGNED_KEY_ERRORS[name]
    text = _decryption_policy(
        decryption_yaml(keys=[RSA_ENC, EC_P256, SHARED_CORP]), unsigned_keys=owners
    )
    problems = problems_of(text, tmp_path)
    field = f"issuers.{reported}.unsigned_encrypted_keys"
    assert [p.field for p in problems] == [field], problems
    assert fragment in problems[0].message
    assert problems[0].line == line_after(text, f"  {reported}:", "unsigned_encrypted_keys:")


def test_unsigned_encrypted_keys_without_a_decryption_section(tmp_path: Path) -> None:
    text = jwe_policy_yaml(CORP, decryption=None, unsigned_keys={CORP.name: [SHARED_CORP.kid]})
    problems = problems_of(text, tmp_path)
    assert [p.field for p in problems] == ["issuers.corp.unsigned_encrypted_keys"]


# the fixtures themselves -----------------------------------------------------------


def _oct_len(key: DecryptionTestKey) -> int:
    return len(b64url_decode(str(key.key.get("k"))))


def test_the_named_keys_are_what_their_names_say() -> None:
    assert RSA_ENC.kty == RSA_ENC_2.kty == "RSA"
    assert [k.key.get("crv") for k in ECDH_KEYS] == ["P-256", "P-384", "X25519"]
    for key, size in ((KW128, 16), (KW256, 32), (DIR128, 16), (DIR256, 32), (DIR512, 64)):
        assert _oct_len(key) == size, key.name
    for enc in CONTENT_ENCRYPTIONS:
        assert _oct_len(dir_key(enc)) == CEK_BYTES[enc]
    assert len({k.kid for k in POLICY_KEYS}) == len(POLICY_KEYS)
    assert all("d" not in k.public_jwk() for k in (RSA_ENC, *ECDH_KEYS))


# an issuer that names its token types: the signed header decides -----------------


def test_token_type_of_an_encrypted_token_is_the_signed_one(tmp_path: Path) -> None:
    text = jwe_policy_yaml(
        CORP,
        decryption=decryption_yaml(keys=[RSA_ENC, SHARED_CORP]),
        unsigned_keys={CORP.name: [SHARED_CORP.kid]},
    ).replace(f'    issuer: "{CORP.iss}"', f'    issuer: "{CORP.iss}"\n    typ: [at+jwt]', 1)
    authorizer = authorizer_for(compile_text(text, tmp_path))
    assert authorizer.check(request(_provider_token())).__class__ is Allow
    # anyone can encrypt to our public key: the JWE's own `typ` or `cty` proves nothing
    id_token = encrypt_nested(
        mint(CORP, headers={"typ": "JWT"}),
        RSA_ENC.public_jwk(),
        "RSA-OAEP-256",
        "A256GCM",
        cty="at+jwt",
        extra_header={"typ": "at+jwt"},
    )
    expect_deny(authorizer.check(request(id_token)), R.TOKEN_TYPE_NOT_ALLOWED)
    # bare claims under the issuer's own secret: the JWE header is the issuer's
    claims = good_claims(CORP)
    shared = SHARED_CORP.public_jwk()
    typed = encrypt_claims(claims, shared, "A256KW", "A256GCM", extra_header={"typ": "at+jwt"})
    expect_allow(authorizer.check(request(typed)), CORP)
    untyped = encrypt_claims(claims, shared, "A256KW", "A256GCM")
    expect_deny(authorizer.check(request(untyped)), R.TOKEN_TYPE_NOT_ALLOWED)


# explain runs the same pipeline on encrypted tokens -------------------------------


@pytest.mark.parametrize("name", list(REFUSALS))
def test_explain_gives_the_servers_verdict_on_every_refusal(
    name: str, policy: Policy, authorizer: Authorizer
) -> None:
    case = REFUSALS[name]
    view = request(case.token, raw=case.raw_authorization)
    keys = StaticKeys.of(policy)
    result = explain(policy, keys, view, FixedClock(NOW))
    assert result.decision == authorizer.check(view)
    failed = [line for line in result.text().splitlines() if ": FAILED " in line]
    assert len(failed) == 1 and f"FAILED {case.expect.value}" in failed[0], result.text()


def test_explain_shows_the_decryption_steps(policy: Policy) -> None:
    keys = StaticKeys.of(policy)
    text = explain(policy, keys, request(_provider_token()), FixedClock(NOW)).text()
    assert "decryption: alg RSA-OAEP-256, enc A256GCM, key enc-rsa-1" in text
    assert "nested token: a signed JWT" in text
    assert "replicated claims: equal: iss, sub, aud" in text
    assert "FAILED" not in text


def test_a_ciphertext_in_non_canonical_base64url_is_malformed(authorizer: Authorizer) -> None:
    """Decoded once, by the library's strict decoder: still `token_malformed`, not a
    decryption failure."""
    token = _nested()
    parts = token.split(".")
    last = parts[3][-1]
    assert len(parts[3]) % 4 in (2, 3)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    parts[3] = parts[3][:-1] + alphabet[alphabet.index(last) | 1]  # stray low bits
    expect_deny(authorizer.check(request(".".join(parts))), R.TOKEN_MALFORMED)
    parts[3] = parts[3][:-1] + "+"
    expect_deny(authorizer.check(request(".".join(parts))), R.TOKEN_MALFORMED)
