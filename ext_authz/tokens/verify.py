"""Pick the verification key for a token and check its signature.

The cryptography is joserfc's (on `cryptography`); we only choose which of its
algorithm objects may run, against which key. Nothing from the token header is
trusted to find a key except `kid`, and only among the issuer's configured keys:
`jwk`, `jku`, `x5u` and `x5c` are never read.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from joserfc.errors import JoseError, SecurityWarning
from joserfc.jws import JWSRegistry

from ext_authz.algorithms import SIGNATURE_ALGORITHMS
from ext_authz.errors import DenialReason, Denied
from ext_authz.keys.jwks import KeySet, VerificationKey
from ext_authz.tokens.format import SignedToken

# Only asymmetric algorithms are ever looked up: `none` and HS* are not in this table.
_REGISTRY = JWSRegistry(algorithms=SIGNATURE_ALGORITHMS)
with warnings.catch_warnings():
    # `EdDSA` is deprecated by RFC 9864 in favour of `Ed25519`, which issuers do not
    # send yet; we accept it with Ed25519 keys only (see `ext_authz.algorithms`)
    warnings.simplefilter("ignore", SecurityWarning)
    _ALGORITHMS = {name: _REGISTRY.get_alg(name) for name in SIGNATURE_ALGORITHMS}


def verify_jws(
    token: SignedToken,
    algorithms: frozenset[str],
    select: Callable[[SignedToken], VerificationKey],
) -> VerificationKey:
    """The signature check of the pipeline: the issuer allows the token's `alg`, a key
    is chosen (`select`: `select_key` over a key set, or the server's refetching
    lookup) and the signature verifies with it. Returns the key; raises `Denied`."""
    if token.alg not in algorithms:
        raise Denied(DenialReason.ALGORITHM_NOT_ALLOWED, f"alg {token.alg}")
    key = select(token)
    verify_signature(token, key)
    return key


def select_key(keys: KeySet, token: SignedToken) -> VerificationKey:
    """The key named by `kid`, or the only key that fits `alg` when there is no `kid`."""
    alg = token.alg
    kid = token.kid
    if kid is not None:
        key = keys.by_kid.get(kid)
        if key is None:
            raise Denied(DenialReason.KEY_UNKNOWN, "no key with this kid")
        if not key.fits(alg):
            raise Denied(DenialReason.KEY_MISMATCH, f"key does not fit alg {alg}")
        return key
    candidates = [k for k in keys.keys if k.fits(alg)]
    if len(candidates) != 1:
        raise Denied(DenialReason.KEY_UNKNOWN, f"no kid, and {len(candidates)} keys fit alg {alg}")
    return candidates[0]


def verify_signature(token: SignedToken, key: VerificationKey) -> None:
    model = _ALGORITHMS.get(token.alg)
    if model is None or not key.fits(token.alg):
        raise Denied(DenialReason.KEY_MISMATCH, f"key does not fit alg {token.alg}")
    try:
        model.check_key(key.key)
        valid = model.verify(token.signing_input, token.signature, key.key)
    except (JoseError, ValueError, TypeError):
        valid = False
    if not valid:
        raise Denied(DenialReason.SIGNATURE_INVALID)
