"""The closed set of reasons a request is denied, and the exception that carries one.

Every denial in the server is one of these reasons. The reason goes to the decision
log and metrics; the client only sees the RFC 6750 error class it maps to.
"""

from __future__ import annotations

import enum


class ErrorClass(enum.Enum):
    """What the client is told, per RFC 6750 section 3.1 (plus plain 403/503/500)."""

    NO_CREDENTIALS = "no_credentials"  # 401, challenge without an error code
    INVALID_REQUEST = "invalid_request"  # 400
    INVALID_TOKEN = "invalid_token"  # 401
    INSUFFICIENT_SCOPE = "insufficient_scope"  # 403
    FORBIDDEN = "forbidden"  # 403, no challenge
    UNAVAILABLE = "unavailable"  # 503
    INTERNAL = "internal"  # 500


class DenialReason(enum.Enum):
    """Why a request was denied. Values are stable: they appear in logs and metrics."""

    # routing
    NO_ROUTE = "no_route"
    ROUTE_DENY = "route_deny"
    # the request itself
    REQUEST_INVALID = "request_invalid"
    # the credential in the request
    TOKEN_MISSING = "token_missing"
    AUTHORIZATION_MALFORMED = "authorization_malformed"
    AUTHORIZATION_MULTIPLE = "authorization_multiple"
    AUTHORIZATION_NOT_BEARER = "authorization_not_bearer"
    # the token's shape
    TOKEN_TOO_LARGE = "token_too_large"
    TOKEN_MALFORMED = "token_malformed"
    TOKEN_HEADER_INVALID = "token_header_invalid"
    TOKEN_PAYLOAD_INVALID = "token_payload_invalid"
    TOKEN_DUPLICATE_MEMBER = "token_duplicate_member"
    TOKEN_CRIT_UNSUPPORTED = "token_crit_unsupported"
    TOKEN_ENCRYPTED_UNSUPPORTED = "token_encrypted_unsupported"
    TOKEN_COMPRESSED = "token_compressed"
    ENCRYPTION_NOT_ALLOWED = "encryption_not_allowed"
    DECRYPTION_KEY_UNKNOWN = "decryption_key_unknown"
    DECRYPTION_FAILED = "decryption_failed"
    NESTED_TOKEN_INVALID = "nested_token_invalid"
    UNSIGNED_ENCRYPTED_CLAIMS = "unsigned_encrypted_claims"
    REPLICATED_CLAIM_MISMATCH = "replicated_claim_mismatch"
    TOKEN_TYPE_NOT_ALLOWED = "token_type_not_allowed"
    ENCRYPTION_REQUIRED = "encryption_required"
    ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
    # issuer and keys
    ISSUER_MISSING = "issuer_missing"
    ISSUER_UNKNOWN = "issuer_unknown"
    ISSUER_NOT_ALLOWED = "issuer_not_allowed"
    KEY_UNKNOWN = "key_unknown"
    KEY_MISMATCH = "key_mismatch"
    KEYS_UNAVAILABLE = "keys_unavailable"
    SIGNATURE_INVALID = "signature_invalid"
    # registered claims
    EXPIRATION_MISSING = "exp_missing"
    CLAIM_TYPE_INVALID = "claim_type_invalid"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    TOKEN_ISSUED_IN_FUTURE = "token_issued_in_future"
    AUDIENCE_MISMATCH = "audience_mismatch"
    # policy rules
    SCOPE_MISSING = "scope_missing"
    CLAIM_MISMATCH = "claim_mismatch"
    CLAIM_VALUE_UNSAFE = "claim_value_unsafe"
    # the server itself
    INTERNAL_ERROR = "internal_error"

    @property
    def error_class(self) -> ErrorClass:
        return _CLASS_OF[self]


_CLASS_OF: dict[DenialReason, ErrorClass] = {
    DenialReason.NO_ROUTE: ErrorClass.FORBIDDEN,
    DenialReason.ROUTE_DENY: ErrorClass.FORBIDDEN,
    DenialReason.TOKEN_MISSING: ErrorClass.NO_CREDENTIALS,
    DenialReason.AUTHORIZATION_NOT_BEARER: ErrorClass.NO_CREDENTIALS,
    DenialReason.REQUEST_INVALID: ErrorClass.INVALID_REQUEST,
    DenialReason.AUTHORIZATION_MALFORMED: ErrorClass.INVALID_REQUEST,
    DenialReason.AUTHORIZATION_MULTIPLE: ErrorClass.INVALID_REQUEST,
    DenialReason.KEYS_UNAVAILABLE: ErrorClass.UNAVAILABLE,
    DenialReason.SCOPE_MISSING: ErrorClass.INSUFFICIENT_SCOPE,
    DenialReason.CLAIM_MISMATCH: ErrorClass.INSUFFICIENT_SCOPE,
    DenialReason.CLAIM_VALUE_UNSAFE: ErrorClass.FORBIDDEN,
    DenialReason.INTERNAL_ERROR: ErrorClass.INTERNAL,
}
for _reason in DenialReason:
    _CLASS_OF.setdefault(_reason, ErrorClass.INVALID_TOKEN)


class Denied(Exception):
    """Raised inside the pipeline to stop with a denial reason.

    `detail` is for the operator's log only and must never hold a token, a key or a
    claim value: it names what failed (a claim name, an algorithm), not the data.
    """

    def __init__(self, reason: DenialReason, detail: str = "") -> None:
        super().__init__(reason.value if not detail else f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
