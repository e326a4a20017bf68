"""The bearer credential in the Authorization header, and the compact JWS structure checks
made before any cryptography. Tokens are built by hand from JSON bytes."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import pytest
from joserfc.jwk import ECKey

from ext_authz.errors import DenialReason, Denied
from ext_authz.keys.jwks import parse_jwks
from ext_authz.tokens.credentials import MAX_AUTHORIZATION_BYTES, bearer_token
from ext_authz.tokens.format import MAX_TOKEN_BYTES, parse_signed
from ext_authz.tokens.verify import verify_signature

_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def js(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def token(
    header: bytes = b'{"alg":"RS256","kid":"k1"}',
    payload: bytes = b'{"iss":"https://login.example.com/","sub":"alice","exp":1800000000}',
    signature: bytes = b"\x01" * 64,
) -> str:
    return ".".join((b64(header), b64(payload), b64(signature)))


def non_canonical(segment: str) -> str:
    """The same bytes with a spare bit of the last character set (RFC 4648 section 3.5)."""
    spare_bits = {2: 4, 3: 2}[len(segment) % 4]
    last = _B64URL.index(segment[-1])
    assert last % (1 << spare_bits) == 0
    return segment[:-1] + _B64URL[last | 1]


GOOD = token()
HEADER, PAYLOAD, SIGNATURE = GOOD.split(".")


# bearer_token -------------------------------------------------------------------

BEARER: dict[str, tuple[Mapping[str, str], str | DenialReason | None]] = {
    "no-header": ({}, None),
    "other-headers-only": ({"cookie": "a=b"}, None),
    "bearer": ({"authorization": f"Bearer {GOOD}"}, GOOD),
    "bearer-lower-case": ({"authorization": "bearer abc.def.ghi"}, "abc.def.ghi"),
    "bearer-upper-case": ({"authorization": "BEARER abc.def.ghi"}, "abc.def.ghi"),
    "surrounding-spaces": ({"authorization": "  Bearer abc.def.ghi \t"}, "abc.def.ghi"),
    "b64token-characters": ({"authorization": "Bearer aZ09-._~+/=="}, "aZ09-._~+/=="),
    "basic": ({"authorization": "Basic abc"}, DenialReason.AUTHORIZATION_NOT_BEARER),
    "bearer-lookalike-scheme": (
        {"authorization": "Bearerx abc"},
        DenialReason.AUTHORIZATION_NOT_BEARER,
    ),
    "bearer-alone": ({"authorization": "Bearer"}, DenialReason.AUTHORIZATION_MALFORMED),
    "bearer-space-only": ({"authorization": "Bearer "}, DenialReason.AUTHORIZATION_MALFORMED),
    "bearer-two-words": ({"authorization": "Bearer a b"}, DenialReason.AUTHORIZATION_MALFORMED),
    "bearer-tab-separator": (
        {"authorization": "Bearer\tabc"},
        DenialReason.AUTHORIZATION_MALFORMED,
    ),
    "bearer-quote-in-token": (
        {"authorization": 'Bearer a"b'},
        DenialReason.AUTHORIZATION_MALFORMED,
    ),
    "padding-in-the-middle": (
        {"authorization": "Bearer ab=c"},
        DenialReason.AUTHORIZATION_MALFORMED,
    ),
    "empty": ({"authorization": ""}, DenialReason.AUTHORIZATION_MALFORMED),
    "blank": ({"authorization": "   "}, DenialReason.AUTHORIZATION_MALFORMED),
    "no-scheme": ({"authorization": "abc.def.ghi extra"}, DenialReason.AUTHORIZATION_NOT_BEARER),
    "two-bearer-credentials": (
        {"authorization": "Bearer aaa.bbb.ccc,Bearer ddd.eee.fff"},
        DenialReason.AUTHORIZATION_MULTIPLE,
    ),
    "bearer-and-basic": (
        {"authorization": "Bearer aaa.bbb.ccc, Basic abc"},
        DenialReason.AUTHORIZATION_MULTIPLE,
    ),
    "oversize": (
        {"authorization": "Bearer " + "a" * MAX_AUTHORIZATION_BYTES},
        DenialReason.TOKEN_TOO_LARGE,
    ),
    "oversize-garbage": (
        {"authorization": "," * (MAX_AUTHORIZATION_BYTES + 1)},
        DenialReason.TOKEN_TOO_LARGE,
    ),
}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [pytest.param(h, e, id=name) for name, (h, e) in BEARER.items()],
)
def test_bearer_token(headers: Mapping[str, str], expected: str | DenialReason | None) -> None:
    if not isinstance(expected, DenialReason):
        assert bearer_token(headers) == expected
        return
    with pytest.raises(Denied) as denied:
        bearer_token(headers)
    assert denied.value.reason is expected


def test_bearer_token_at_the_size_limit_is_accepted() -> None:
    credentials = "a" * (MAX_AUTHORIZATION_BYTES - len("Bearer "))
    assert bearer_token({"authorization": f"Bearer {credentials}"}) == credentials


# parse_signed -------------------------------------------------------------------


def oversize_token() -> str:
    """Over the limit, and also not base64url: the size must be refused first."""
    filler = "!" * (MAX_TOKEN_BYTES - len(HEADER) - len(SIGNATURE))
    return f"{HEADER}.{filler}.{SIGNATURE}"


PARSE: dict[str, tuple[str, DenialReason]] = {
    # segments
    "five-segments-jwe": (
        "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d",
        DenialReason.NESTED_TOKEN_INVALID,
    ),
    "one-segment": (HEADER, DenialReason.TOKEN_MALFORMED),
    "two-segments": (f"{HEADER}.{PAYLOAD}", DenialReason.TOKEN_MALFORMED),
    "four-segments": (f"{GOOD}.{SIGNATURE}", DenialReason.TOKEN_MALFORMED),
    "six-segments": (f"{GOOD}.a.b.c", DenialReason.TOKEN_MALFORMED),
    "empty-header": (f".{PAYLOAD}.{SIGNATURE}", DenialReason.TOKEN_MALFORMED),
    "empty-payload": (f"{HEADER}..{SIGNATURE}", DenialReason.TOKEN_MALFORMED),
    "empty-string": ("", DenialReason.TOKEN_MALFORMED),
    # base64url
    "header-plus-slash-alphabet": (
        f"{HEADER[:-1]}+.{PAYLOAD}.{SIGNATURE}",
        DenialReason.TOKEN_MALFORMED,
    ),
    "payload-space": (
        f"{HEADER}.{PAYLOAD[:5]} {PAYLOAD[5:]}.{SIGNATURE}",
        DenialReason.TOKEN_MALFORMED,
    ),
    "signature-slash": (f"{HEADER}.{PAYLOAD}.{SIGNATURE[:-2]}/A", DenialReason.TOKEN_MALFORMED),
    "header-padding": (
        f"{b64(b'{}')}==.{PAYLOAD}.{SIGNATURE}",
        DenialReason.TOKEN_MALFORMED,
    ),
    "signature-padding": (f"{HEADER}.{PAYLOAD}.{SIGNATURE}==", DenialReason.TOKEN_MALFORMED),
    "impossible-length": (f"{HEADER}.{PAYLOAD}.{SIGNATURE}AAA", DenialReason.TOKEN_MALFORMED),
    "header-non-canonical": (
        ".".join(
            (non_canonical(b64(b'{"alg":"RS256","kid":"k"}')), PAYLOAD, SIGNATURE),
        ),
        DenialReason.TOKEN_MALFORMED,
    ),
    "payload-non-canonical": (
        ".".join((HEADER, non_canonical(b64(b'{"sub":"a","exp":1}')), SIGNATURE)),
        DenialReason.TOKEN_MALFORMED,
    ),
    "signature-non-canonical": (
        ".".join((HEADER, PAYLOAD, non_canonical(b64(b"\x01" * 65)))),
        DenialReason.TOKEN_MALFORMED,
    ),
    # header JSON
    "header-not-json": (token(header=b"not json"), DenialReason.TOKEN_HEADER_INVALID),
    "header-not-utf8": (token(header=b'{"alg":"\xff"}'), DenialReason.TOKEN_HEADER_INVALID),
    "header-json-array": (token(header=b'["RS256"]'), DenialReason.TOKEN_HEADER_INVALID),
    "header-json-string": (token(header=b'"RS256"'), DenialReason.TOKEN_HEADER_INVALID),
    "header-duplicate-member": (
        token(header=b'{"alg":"RS256","kid":"a","alg":"none"}'),
        DenialReason.TOKEN_DUPLICATE_MEMBER,
    ),
    "header-missing-alg": (token(header=js({"kid": "k1"})), DenialReason.TOKEN_HEADER_INVALID),
    "header-alg-number": (token(header=js({"alg": 256})), DenialReason.TOKEN_HEADER_INVALID),
    "header-alg-null": (token(header=js({"alg": None})), DenialReason.TOKEN_HEADER_INVALID),
    "header-alg-empty": (token(header=js({"alg": ""})), DenialReason.TOKEN_HEADER_INVALID),
    "header-alg-too-long": (token(header=js({"alg": "R" * 33})), DenialReason.TOKEN_HEADER_INVALID),
    "header-kid-number": (
        token(header=js({"alg": "RS256", "kid": 7})),
        DenialReason.TOKEN_HEADER_INVALID,
    ),
    "header-kid-object": (
        token(header=js({"alg": "RS256", "kid": {"k": 1}})),
        DenialReason.TOKEN_HEADER_INVALID,
    ),
    "header-crit": (
        token(header=js({"alg": "RS256", "crit": ["exp"], "exp": 1})),
        DenialReason.TOKEN_CRIT_UNSUPPORTED,
    ),
    "header-crit-empty": (
        token(header=js({"alg": "RS256", "crit": []})),
        DenialReason.TOKEN_CRIT_UNSUPPORTED,
    ),
    "header-b64": (
        token(header=js({"alg": "RS256", "b64": False})),
        DenialReason.TOKEN_HEADER_INVALID,
    ),
    "header-zip": (
        token(header=js({"alg": "RS256", "zip": "DEF"})),
        DenialReason.TOKEN_HEADER_INVALID,
    ),
    "header-enc": (
        token(header=js({"alg": "RS256", "enc": "A256GCM"})),
        DenialReason.TOKEN_HEADER_INVALID,
    ),
    "header-over-4-kib": (
        token(header=js({"alg": "RS256", "x": "a" * 4096})),
        DenialReason.TOKEN_HEADER_INVALID,
    ),
    # payload JSON
    "payload-not-json": (token(payload=b"{sub:alice}"), DenialReason.TOKEN_PAYLOAD_INVALID),
    "payload-json-array": (token(payload=b'[{"sub":"a"}]'), DenialReason.TOKEN_PAYLOAD_INVALID),
    "payload-json-null": (token(payload=b"null"), DenialReason.TOKEN_PAYLOAD_INVALID),
    "payload-duplicate-member": (
        token(payload=b'{"sub":"alice","sub":"admin"}'),
        DenialReason.TOKEN_DUPLICATE_MEMBER,
    ),
    "payload-nested-duplicate-member": (
        token(payload=b'{"org":{"tenant":"a","tenant":"b"}}'),
        DenialReason.TOKEN_DUPLICATE_MEMBER,
    ),
    "payload-nan": (token(payload=b'{"exp":NaN}'), DenialReason.TOKEN_PAYLOAD_INVALID),
    "payload-infinity": (token(payload=b'{"exp":Infinity}'), DenialReason.TOKEN_PAYLOAD_INVALID),
    "payload-minus-infinity": (
        token(payload=b'{"nbf":-Infinity}'),
        DenialReason.TOKEN_PAYLOAD_INVALID,
    ),
    "payload-trailing-data": (
        token(payload=b'{"sub":"a"}{"sub":"b"}'),
        DenialReason.TOKEN_PAYLOAD_INVALID,
    ),
    "payload-deep-nesting": (
        token(payload=b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}"),
        DenialReason.TOKEN_PAYLOAD_INVALID,
    ),
    # sizes
    "signature-over-1-kib": (token(signature=b"\x00" * 1025), DenialReason.TOKEN_MALFORMED),
    "token-over-16-kib": (oversize_token(), DenialReason.TOKEN_TOO_LARGE),
}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [pytest.param(t, r, id=name) for name, (t, r) in PARSE.items()],
)
def test_parse_signed_refuses(raw: str, reason: DenialReason) -> None:
    with pytest.raises(Denied) as denied:
        parse_signed(raw)
    assert denied.value.reason is reason


def test_oversize_case_is_just_over_the_limit() -> None:
    assert len(oversize_token()) == MAX_TOKEN_BYTES + 2


def test_parse_signed_accepts_a_well_formed_token() -> None:
    parsed = parse_signed(GOOD)
    assert parsed.header == {"alg": "RS256", "kid": "k1"}
    assert parsed.claims == {
        "iss": "https://login.example.com/",
        "sub": "alice",
        "exp": 1800000000,
    }
    assert parsed.alg == "RS256"
    assert parsed.kid == "k1"
    assert parsed.signing_input == f"{HEADER}.{PAYLOAD}".encode("ascii")
    assert parsed.signature == b"\x01" * 64
    assert "alice" not in repr(parsed)
    assert "k1" not in repr(parsed)


def _token_of_length(length: int) -> str:
    for signature_bytes in (64, 65, 66):
        for pad in range(length):
            candidate = token(
                payload=js({"sub": "alice", "pad": "p" * pad}), signature=b"\x02" * signature_bytes
            )
            if len(candidate) == length:
                return candidate
            if len(candidate) > length:
                break
    raise AssertionError(f"no token of exactly {length} characters")


def test_token_exactly_at_the_size_limit_is_parsed() -> None:
    raw = _token_of_length(MAX_TOKEN_BYTES)
    assert len(raw) == MAX_TOKEN_BYTES
    parsed = parse_signed(raw)
    assert parsed.claims["sub"] == "alice"


@pytest.mark.parametrize(
    ("header", "claims"),
    [
        pytest.param({"alg": "ES256"}, {}, id="no-kid-empty-claims"),
        pytest.param({"alg": "PS512", "typ": "JWT", "cty": "x"}, {"n": 1.5}, id="typ-cty"),
        pytest.param({"alg": "EdDSA", "kid": ""}, {"sub": "ü"}, id="empty-kid-unicode"),
    ],
)
def test_parse_signed_accepts_header_variants(
    header: dict[str, Any], claims: dict[str, Any]
) -> None:
    parsed = parse_signed(token(header=js(header), payload=js(claims)))
    assert parsed.header == header
    assert parsed.claims == claims


@pytest.mark.parametrize(
    ("alg", "reason"),
    [
        pytest.param("ES256", DenialReason.SIGNATURE_INVALID, id="es256"),
        pytest.param("none", DenialReason.KEY_MISMATCH, id="alg-none"),
    ],
)
def test_empty_signature_is_parsed_and_never_verifies(alg: str, reason: DenialReason) -> None:
    raw = f"{b64(js({'alg': alg}))}.{PAYLOAD}."
    parsed = parse_signed(raw)
    assert parsed.signature == b""
    assert parsed.alg == alg
    key = ECKey.generate_key("P-256", private=False)
    (verification_key,) = parse_jwks(
        {"keys": [key.as_dict(private=False)]}
    ).key_set.verification_keys
    with pytest.raises(Denied) as denied:
        verify_signature(parsed, verification_key)
    assert denied.value.reason is reason
