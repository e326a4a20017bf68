"""Secrets stay secret: no token, key material or claim value in logs, error bodies
or challenges, whatever happens.

A suite of good and bad requests (signed and encrypted), a JWKS endpoint that breaks
in every way, and policies that fail to load all run with every logger at DEBUG,
formatted by the server's own JSON and text formatters. Then every token, each of its
segments, every key member but `e` (`n`, `d`, `p`, `q`, `dp`, `dq`, `qi`, `k`, `x`, `y`)
and the marker values planted in claims are searched for in all of it, whole
and by their first 24 characters.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from ext_authz.decision import Deny
from ext_authz.errors import DenialReason, Denied
from ext_authz.keys.decryption_keys import DecryptionKeyError, parse_decryption_jwks
from ext_authz.keys.jwks import parse_jwks
from ext_authz.keys.manager import KeyManager
from ext_authz.log import JsonFormatter, TextFormatter
from ext_authz.policy.loader import PolicyError, compile_policy_text, load_policy
from ext_authz.tokens.decrypt import decrypt_token
from ext_authz.tokens.format import parse_signed
from tests.support.checks import Outcome, check
from tests.support.doubles import FixedClock
from tests.support.jwks_server import jwks_server
from tests.support.service import (
    ENC_EC,
    ENC_RSA,
    OPEN,
    OPEN_EC_KEY,
    OTHER,
    SHARED_CORP,
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
    PSS,
    ROGUE_RSA,
    b64json,
    b64url,
    good_claims,
    mint,
    public_jwk,
    rsa_key,
    unsigned,
)

R = DenialReason
KEY_MEMBERS = ("n", "d", "p", "q", "dp", "dq", "qi", "k", "x", "y")
PREFIX = 24

# claim values nobody but the token holder and the upstream may see
MARKERS: dict[str, Any] = {
    "sub": "sub-6c1f0e9a-marker",
    "email": "mark-2b7d41@secret.test",
    "org": {"tenant": "tenant-93ad5-marker"},
    "note": "note-e04f-marker",
}
MARKER_VALUES = (
    "sub-6c1f0e9a-marker",
    "mark-2b7d41@secret.test",
    "tenant-93ad5-marker",
    "note-e04f-marker",
)
BODY_MARKER = "jwks-body-7731-marker"
POLICY_MARKER = "cG9saWN5LXNlY3JldC1rZXktbWFya2VyLTk5"  # base64url of a made-up secret


def marked(issuer: Any = CORP, **claims: Any) -> str:
    return mint(issuer, **(MARKERS | claims))


@contextmanager
def all_logs() -> Iterator[io.StringIO]:
    """Every record of every logger, at DEBUG, through both of the server's formatters."""
    stream = io.StringIO()
    handlers = []
    for formatter in (JsonFormatter(), TextFormatter()):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.setLevel(logging.DEBUG)
        handlers.append(handler)
    root = logging.getLogger()
    saved = {"": root.level}
    root.setLevel(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        logger = logging.getLogger(name)
        if name.startswith("ext_authz") or logger.level > logging.DEBUG:
            saved[name] = logger.level
            logger.setLevel(logging.DEBUG)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield stream
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name or None).setLevel(level)


def secrets_of_token(token: str) -> set[str]:
    found = {token}
    for segment in token.split("."):
        if len(segment) >= 8:
            found.add(segment)
            found.add(segment[:PREFIX])
    return found


def secrets_of_jwk(jwk: dict[str, Any]) -> set[str]:
    found = set()
    for member in KEY_MEMBERS:
        value = jwk.get(member)
        if isinstance(value, str) and len(value) >= 8:
            found.update({value, value[:PREFIX]})
    return found


def all_key_material() -> set[str]:
    found: set[str] = set()
    for key in (CORP.key, PARTNER.key, OPEN.key, OTHER.key, PSS.key, ROGUE_RSA, OPEN_EC_KEY):
        found |= secrets_of_jwk(_private_jwk(key))
    for jwk in (ENC_RSA, ENC_EC, SHARED_CORP):
        found |= secrets_of_jwk(jwk.export(private_key=True, as_dict=True))
    return found


def _private_jwk(key: Any) -> dict[str, Any]:
    import jwt

    algorithm = (
        jwt.algorithms.RSAAlgorithm
        if isinstance(key, rsa.RSAPrivateKey)
        else jwt.algorithms.ECAlgorithm
    )
    value = algorithm.to_jwk(key, as_dict=True)
    assert isinstance(value, dict)
    value.pop("key_ops", None)  # PyJWT writes ["sign"]
    return value


def assert_nothing_leaks(texts: Iterable[str], secrets: Iterable[str]) -> None:
    haystack = "\n".join(texts)
    # JSON logs escape non-ASCII and slashes differently: look at both spellings
    haystack += "\n" + haystack.replace("\\/", "/")
    leaked = sorted(s for s in set(secrets) if s and s in haystack)
    assert not leaked, f"{len(leaked)} secrets leaked, e.g. {leaked[0][:12]}..."


def client_visible(outcome: Outcome) -> list[str]:
    """What a client sees of a denial: body and every response header."""
    denied = outcome.response.denied_response
    return [outcome.body] + [f"{h.header.key}: {h.header.value}" for h in denied.headers]


# the requests ---------------------------------------------------------------------------------


def _requests() -> dict[str, dict[str, Any]]:
    good = marked()
    forged = marked(key=ROGUE_RSA)
    bare_claims = json.dumps(good_claims(CORP) | MARKERS).encode()
    jwe_good = nested(good)
    jwe_parts = jwe_good.split(".")
    return {
        "allowed": {"token": good},
        "allowed, write": {"token": good, "method": "POST"},
        "allowed, EC issuer": {"token": marked(PARTNER)},
        "allowed, nested JWE (RSA)": {"token": jwe_good},
        "allowed, nested JWE (ECDH)": {
            "token": nested(marked(), public_of(ENC_EC), "ECDH-ES+A256KW")
        },
        "allowed, bare claims under the shared key": {
            "token": encrypt(bare_claims, SHARED_CORP, "A256KW")
        },
        "unsafe header value dropped": {"token": marked(email="a\r\nx-evil: 1")},
        "expired": {"token": marked(exp=NOW - 3600)},
        "forged signature": {"token": forged},
        "tampered": {
            "token": ".".join([*good.split(".")[:1], b64json(MARKERS), good.split(".")[2]])
        },
        "wrong audience": {"token": marked(aud="other-api")},
        "missing scope": {"token": marked(scope="profile")},
        "claim mismatch": {"token": marked(email_verified=False), "method": "POST"},
        "unknown kid": {"token": marked(headers={"kid": "nope"})},
        "unknown issuer": {"token": marked(iss="https://unknown.test/")},
        "alg none": {"token": unsigned({"alg": "none"}, good_claims(CORP) | MARKERS)},
        "numeric string exp": {"token": marked(exp=str(NOW + 600))},
        "route denied": {"token": good, "path": "/internal"},
        "anonymous": {"token": good, "path": "/healthz"},
        "no token": {},
        "two credentials": {"authorization": f"Bearer {good}, Bearer {forged}"},
        "basic": {"authorization": f"Basic {b64url(b'user:' + good.encode())}"},
        "oversized": {"token": marked(padding="p" * 17_000)},
        "JWE bad tag": {"token": ".".join([*jwe_parts[:4], b64url(b"\x00" * 16)])},
        "JWE short tag": {"token": ".".join([*jwe_parts[:4], jwe_parts[4][:10]])},
        "bare JWE to our public key": {
            "token": encrypt(bare_claims, public_of(ENC_RSA), "RSA-OAEP-256")
        },
        "JWE compressed": {
            "token": encrypt(good.encode(), public_of(ENC_RSA), "RSA-OAEP-256", zip="DEF")
        },
        "JWE to a key we lack": {
            "token": encrypt(good.encode(), public_of(ENC_RSA), "RSA-OAEP-256", kid="nope")
        },
        "lone surrogate in a mapped claim": {
            "token": mint(CORP, sub=MARKERS["sub"], email="x\ud83d", note=MARKERS["note"])
        },
    }


def test_requests_leak_nothing_to_logs_bodies_or_challenges() -> None:
    stack = make_stack()
    requests = _requests()
    secrets = all_key_material() | set(MARKER_VALUES)
    visible: list[str] = []
    with all_logs() as logs:
        for name, request in requests.items():
            outcome = stack.check(**request)
            assert outcome.record is not None, name
            visible += client_visible(outcome)
            for value in request.values():
                if isinstance(value, str) and value.count(".") >= 2:
                    secrets |= secrets_of_token(value)
                elif isinstance(value, str) and value.startswith(("Bearer", "Basic")):
                    secrets |= secrets_of_token(value.split(" ", 1)[1])
    text = logs.getvalue()
    assert '"logger":"ext_authz.decision"' in text  # the capture did capture
    assert_nothing_leaks([text], secrets)
    assert_nothing_leaks(visible, secrets)


def test_every_denial_body_and_challenge_is_generic() -> None:
    """The client learns the error class, never the precise reason or any detail:
    every body is one of a handful of fixed texts, one per error class."""
    stack = make_stack()
    bodies: dict[str, set[str]] = {}
    for request in _requests().values():
        outcome = stack.check(**request)
        if outcome.allowed:
            continue
        body = json.loads(outcome.body)
        assert set(body) == {"error", "error_description"}
        bodies.setdefault(body["error"], set()).add(outcome.body)
        challenge = outcome.www_authenticate or ""
        for reason in DenialReason:
            if reason.value not in ("invalid_token", "insufficient_scope"):
                assert reason.value not in outcome.body + challenge
    assert all(len(texts) == 1 for texts in bodies.values()), bodies
    assert {"invalid_token", "no_credentials", "invalid_request", "forbidden"} <= set(bodies)


def test_broken_jwks_endpoints_leak_nothing(tmp_path: Path) -> None:
    """A JWKS that publishes private and weak keys, then answers garbage, errors and
    duplicates: the warnings name keys by kid and failures by kind, never content."""
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    leaked_private = _private_jwk(rsa_key()) | {"kid": "oops-private"}
    secret_oct = {"kty": "oct", "kid": "oops-hmac", "k": POLICY_MARKER}
    served = {"keys": [public_jwk(weak, kid="weak"), leaked_private, secret_oct, CORP.public_jwk()]}
    secrets = (
        secrets_of_jwk(leaked_private)
        | secrets_of_jwk(secret_oct)
        | secrets_of_jwk(public_jwk(weak, kid=None))
        | {BODY_MARKER}
    )
    bodies = [
        f'{{"keys": [{{"kty": "RSA", "n": "{BODY_MARKER}"'.encode(),
        f'{{"keys": "{BODY_MARKER}"}}'.encode(),
        f"<html>{BODY_MARKER}</html>".encode(),
        f'{{"keys": [], "keys": ["{BODY_MARKER}"]}}'.encode(),
        json.dumps({"keys": [{"kty": "RSA", "kid": "k", "n": BODY_MARKER, "e": "AQAB"}]}).encode(),
        b"x" * 300_000,
    ]
    with jwks_server(served) as server, all_logs() as logs:
        policy_text = (
            f"issuers:\n  corp:\n    issuer: {json.dumps(CORP.iss)}\n"
            f"    jwks_uri: {server.jwks_uri}\n    audiences: [{AUDIENCE}]\n"
            "    algorithms: [RS256]\n" + DEFAULT_ROUTES
        )
        policy = compile_policy_text(policy_text, label="p", base_dir=tmp_path)
        clock = FixedClock(NOW)
        manager = KeyManager(clock=clock)
        manager.start(policy.issuers)
        try:
            assert manager.wait_ready(10)
            stack = make_stack(policy, manager, clock)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PyJWT warns about the 1024-bit key
                weak_token = marked(key=weak, headers={"kid": "weak"})
            tokens = [marked(), weak_token, marked(headers={"kid": "x"})]
            outcomes = [stack.check(token=t) for t in tokens]
            for body in bodies:
                server.behaviour.body = body
                clock.advance(31)
                manager.refetch("corp")
                outcomes += [stack.check(token=t) for t in tokens]
            server.behaviour.body = None
            server.behaviour.status = 500
            clock.advance(31)
            manager.refetch("corp")
            outcomes.append(stack.check(token=marked()))
        finally:
            manager.stop()
        for token in tokens:
            secrets |= secrets_of_token(token)
    text = logs.getvalue()
    # the capture did capture: the skipped keys were named (by kid) and fetches failed
    assert '"logger":"ext_authz.keys"' in text
    assert "oops-private" in text and "oops-hmac" in text
    assert outcomes[0].status == 200
    assert_nothing_leaks([text], secrets | set(MARKER_VALUES))
    assert_nothing_leaks([v for o in outcomes for v in client_visible(o)], secrets)


def _bad_policies() -> dict[str, str]:
    private_rsa = _private_jwk(rsa_key()) | {"kid": "sig-private"}
    weak_private = _private_jwk(
        rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    ) | {"kid": "dec-weak", "use": "enc"}
    broken_ec = ENC_EC.export(private_key=True, as_dict=True) | {"d": POLICY_MARKER}
    issuer = f"issuers:\n  corp:\n    issuer: {json.dumps(CORP.iss)}\n"
    good_jwks = f"    jwks: {json.dumps(CORP.jwks())}\n"

    def decryption(*keys: dict[str, Any]) -> str:
        return (
            f"decryption:\n  jwks: {json.dumps({'keys': list(keys)})}\n"
            "  algorithms: [RSA-OAEP-256, ECDH-ES]\n  encryptions: [A256GCM]\n"
        )

    return {
        "private signing key only": issuer + f"    jwks: {json.dumps({'keys': [private_rsa]})}\n",
        "weak decryption key": issuer + good_jwks + decryption(weak_private),
        "broken EC decryption key": issuer + good_jwks + decryption(broken_ec),
        "secret in a wrongly typed field": issuer
        + good_jwks
        + f"    leeway: {json.dumps(POLICY_MARKER)}\n",
        "secret on a line that does not parse": issuer
        + f'    jwks: {{"keys": [{{"kty": "oct", "k": "{POLICY_MARKER}"}}]\n',
        "symmetric issuer key": issuer
        + f"    jwks: {json.dumps({'keys': [{'kty': 'oct', 'k': POLICY_MARKER}]})}\n",
    }


def test_policy_load_errors_leak_no_key_material(tmp_path: Path) -> None:
    secrets = {POLICY_MARKER}
    for text in _bad_policies().values():
        for jwk in _jwks_in(text):
            secrets |= secrets_of_jwk(jwk)
    messages: list[str] = []
    with all_logs() as logs:
        for name, text in _bad_policies().items():
            path = tmp_path / f"{name.replace(' ', '-')}.yaml"
            path.write_text(text + DEFAULT_ROUTES, encoding="utf-8")
            with pytest.raises(PolicyError) as refused:
                load_policy(path)
            messages.append(str(refused.value))
            messages += [str(p) for p in refused.value.problems]
    text_logs = logs.getvalue()
    assert "policy key skipped" in text_logs
    assert_nothing_leaks([*messages, text_logs], secrets)


def _jwks_in(text: str) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = []
    for line in text.splitlines():
        _, _, value = line.partition("jwks: ")
        if value:
            try:
                keys += json.loads(value)["keys"]
            except ValueError:
                continue
    return keys


def test_decryption_key_errors_name_the_key_not_its_material() -> None:
    broken = ENC_RSA.export(private_key=True, as_dict=True) | {"kid": "k1", "p": POLICY_MARKER}
    with pytest.raises(DecryptionKeyError) as refused:
        parse_decryption_jwks({"keys": [broken]})
    assert "k1" in str(refused.value)
    assert_nothing_leaks([str(refused.value)], secrets_of_jwk(broken) | {POLICY_MARKER})


# reprs --------------------------------------------------------------------------------


def test_reprs_of_keys_tokens_and_decrypted_plaintext_reveal_nothing() -> None:
    stack = make_stack()
    token = marked()
    jwe_token = nested(token)
    signed = parse_signed(token)
    assert stack.policy.decryption is not None
    decrypted = decrypt_token(jwe_token, stack.policy.decryption)
    verification = parse_jwks(CORP.jwks()).key_set.verification_keys[0]
    decryption_keys = stack.policy.decryption.key_set
    objects: list[object] = [
        signed,
        decrypted,
        verification,
        verification.key,
        parse_jwks(CORP.jwks()).key_set,
        decryption_keys,
        *decryption_keys.decryption_keys,
        *(k.key for k in decryption_keys.decryption_keys),
        stack.policy.decryption,
        stack.policy,
        Denied(R.SIGNATURE_INVALID),
        Deny(R.SIGNATURE_INVALID, "orders", route="read-orders", issuer="corp"),
    ]
    texts = [repr(o) for o in objects] + [str(o) for o in objects]
    secrets = (
        all_key_material()
        | secrets_of_token(token)
        | secrets_of_token(jwe_token)
        | set(MARKER_VALUES)
        | {decrypted.plaintext.decode()}
    )
    assert_nothing_leaks(texts, secrets)
    assert repr(signed) == "SignedToken(alg='RS256', kid=set)"
    assert repr(verification) == "VerificationKey(kid='corp-1', kty=RSA, alg=RS256)"
    assert repr(decrypted) == "Decrypted(alg=RSA-OAEP-256, enc=A256GCM)"
    assert (
        repr(decryption_keys.decryption_keys[0])
        == "DecryptionKey(kid='enc-rsa', kty=RSA, alg=RSA-OAEP-256)"
    )


def test_the_subject_reaches_envoy_metadata_but_not_the_log_by_default() -> None:
    """By design: `subject` goes to Envoy's dynamic metadata (for its access log) and
    to the decision log only on routes with `log_subject: true`."""
    stack = make_stack()
    with all_logs() as logs:
        outcome = check(stack.service, token=marked())
    assert outcome.allowed
    assert outcome.response.dynamic_metadata["subject"] == MARKERS["sub"]
    assert MARKERS["sub"] not in logs.getvalue()
    assert dict(outcome.upstream_headers)["x-user-id"] == MARKERS["sub"]
