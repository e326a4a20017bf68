"""The policy file's schema, as pydantic models.

Every rule that can be judged from the document alone lives here, once: types,
"exactly one of" choices, header names, claim paths. `loader.py` turns a valid
document into the immutable runtime objects of `model.py`, reading files and
resolving what needs more than one section (issuer references, key files). Unknown
keys are errors, so a typo never silently weakens a rule.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ext_authz import algorithms
from ext_authz.keys.redis_url import CacheUrlError, parse_cache_url
from ext_authz.policy.path_regex import compile_path_regex
from ext_authz.tokens.claims import media_type

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # an RFC 9110 token
# Headers no route may set or remove: hop-by-hop, framing, the credential, the host.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "authorization",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
        "keep-alive",
        "proxy-connection",
        "cookie",
    }
)
_METHOD = re.compile(r"^[A-Z]+$")
_ISSUER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def parse_duration(value: object) -> object:
    """`30`, `30s`, `10m`, `1.5h`, `250ms` become seconds; anything else is left to fail."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 30s, 10m, 24h")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        found = _DURATION.match(value)
        if found:
            return float(found.group(1)) * _UNIT_SECONDS[found.group(2)]
    raise ValueError("a duration is a number of seconds or a string like 30s, 10m, 24h")


_DURATION_JSON: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": _DURATION.pattern},
    ]
}
Duration = Annotated[
    float, BeforeValidator(parse_duration), Field(ge=0), WithJsonSchema(_DURATION_JSON)
]
FetchTimeout = Annotated[
    float, BeforeValidator(parse_duration), Field(gt=0, le=60), WithJsonSchema(_DURATION_JSON)
]
SignatureAlgorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]
KeyManagementAlgorithm = Literal[
    "RSA-OAEP",
    "RSA-OAEP-256",
    "ECDH-ES",
    "ECDH-ES+A128KW",
    "ECDH-ES+A256KW",
    "A128KW",
    "A256KW",
    "dir",
]
ContentEncryption = Literal["A128GCM", "A256GCM", "A128CBC-HS256", "A256CBC-HS512"]
# the names above are the rows of `ext_authz.algorithms` (a test holds them equal)
SIGNATURE_ALGORITHMS = algorithms.SIGNATURE_ALGORITHMS
KEY_MANAGEMENT_ALGORITHMS = algorithms.KEY_MANAGEMENT_ALGORITHMS
CONTENT_ENCRYPTIONS = algorithms.CONTENT_ENCRYPTIONS
NonEmptyStr = Annotated[str, Field(min_length=1)]


def _claim_path(claim: str) -> str:
    if not all(claim.split(".")):
        raise ValueError(f"claim path '{claim}' has an empty part")
    return claim


def _issuer_name(name: str) -> str:
    if not _ISSUER_NAME.match(name):
        raise ValueError("issuer names use letters, digits, '_', '.' and '-' (64 at most)")
    return name


ClaimPath = Annotated[str, Field(min_length=1), AfterValidator(_claim_path)]
IssuerName = Annotated[
    str,
    AfterValidator(_issuer_name),
    WithJsonSchema({"type": "string", "pattern": _ISSUER_NAME.pattern}),
]


def _given(choices: dict[str, bool]) -> list[str]:
    return [name for name, present in choices.items() if present]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class KeysSettingsModel(_Strict):
    """Key fetching settings; the top-level `keys:` section sets defaults for all issuers."""

    default_ttl: Duration = 600.0
    min_ttl: Duration = 60.0
    max_ttl: Duration = 86400.0
    refetch_cooldown: Duration = 5.0
    max_stale: Duration = 86400.0
    fetch_timeout: FetchTimeout = 5.0
    max_jwks_bytes: Annotated[int, Field(gt=0, le=4 * 1024 * 1024)] = 256 * 1024
    cache: NonEmptyStr = "memory"
    cache_dir: NonEmptyStr | None = None

    @field_validator("cache")
    @classmethod
    def _cache_url(cls, value: str) -> str:
        try:
            parse_cache_url(value)
        except CacheUrlError as exc:
            raise ValueError(str(exc)) from None
        return value


class KeysOverrideModel(_Strict):
    """Per-issuer overrides of `keys:`; unset fields inherit the top-level values."""

    default_ttl: Duration | None = None
    min_ttl: Duration | None = None
    max_ttl: Duration | None = None
    refetch_cooldown: Duration | None = None
    max_stale: Duration | None = None
    fetch_timeout: FetchTimeout | None = None
    max_jwks_bytes: Annotated[int, Field(gt=0, le=4 * 1024 * 1024)] | None = None


class TokenHeaderModel(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")]
    prefix: str = ""


class TokenFromModel(_Strict):
    """Where to read the token instead of `Authorization: Bearer` (never the query)."""

    headers: list[TokenHeaderModel] = Field(default_factory=list)
    cookies: list[Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")]] = Field(
        default_factory=list
    )

    @model_validator(mode="after")
    def _somewhere(self) -> TokenFromModel:
        if not self.headers and not self.cookies:
            raise ValueError("name at least one header or cookie")
        return self


class IssuerModel(_Strict):
    issuer: NonEmptyStr
    audiences: list[NonEmptyStr] | None = None
    algorithms: list[SignatureAlgorithm] | None = None
    jwks_uri: NonEmptyStr | None = None
    discovery: bool = False
    jwks_file: NonEmptyStr | None = None
    jwks: dict[str, Any] | None = None
    leeway: Duration = 60.0
    keys: KeysOverrideModel | None = None
    require_encryption: bool = False
    unsigned_encrypted_keys: list[NonEmptyStr] = Field(default_factory=list)
    token_from: TokenFromModel | None = None
    # the token types (JWS `typ`, e.g. at+jwt of RFC 9068) accepted; absent: any
    typ: (
        list[Annotated[str, Field(pattern=r"^[A-Za-z0-9!#$&^_.+-]+(/[A-Za-z0-9!#$&^_.+-]+)?$")]]
        | None
    ) = None

    @field_validator("typ")
    @classmethod
    def _media_types(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("must list at least one token type when present")
        return None if value is None else [media_type(typ) for typ in value]

    @field_validator("audiences", "algorithms")
    @classmethod
    def _not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("must list at least one value when present")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> IssuerModel:
        given = _given(
            {
                "jwks_uri": self.jwks_uri is not None,
                "discovery": self.discovery,
                "jwks_file": self.jwks_file is not None,
                "jwks": self.jwks is not None,
            },
        )
        if len(given) != 1:
            raise ValueError(
                "give exactly one key source: jwks_uri, discovery: true, jwks_file or jwks "
                f"(found: {', '.join(given) or 'none'})"
            )
        return self

    @property
    def key_source(self) -> str:
        """The one key source given: jwks_uri, discovery, jwks_file or jwks."""
        if self.jwks_uri is not None:
            return "jwks_uri"
        if self.discovery:
            return "discovery"
        return "jwks_file" if self.jwks_file is not None else "jwks"


class DecryptionModel(_Strict):
    jwks_file: NonEmptyStr | None = None
    jwks: dict[str, Any] | None = None
    jwks_env: NonEmptyStr | None = None
    algorithms: list[KeyManagementAlgorithm] = Field(min_length=1)
    encryptions: list[ContentEncryption] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_key_source(self) -> DecryptionModel:
        given = {
            "jwks_file": self.jwks_file is not None,
            "jwks": self.jwks is not None,
            "jwks_env": self.jwks_env is not None,
        }
        if len(_given(given)) != 1:
            raise ValueError("give exactly one of jwks_file, jwks or jwks_env")
        return self


class MatchModel(_Strict):
    path: NonEmptyStr | None = None
    path_prefix: NonEmptyStr | None = None
    path_regex: NonEmptyStr | None = None
    methods: list[NonEmptyStr] | None = None
    hosts: list[NonEmptyStr] | None = None
    context_extensions: dict[str, str] | None = None
    case_sensitive: bool = True

    @field_validator("path", "path_prefix")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @field_validator("path_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            compile_path_regex(value)  # a ValueError names what RE2 refuses
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must list at least one method when present")
        for method in value:
            if not _METHOD.match(method):
                raise ValueError(f"{method!r} is not an upper-case HTTP method")
        return value

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must list at least one host when present")
        for host in value:
            if "*" in host and not (host.startswith("*.") and "*" not in host[2:]):
                raise ValueError(f"{host!r}: a wildcard host looks like '*.example.com'")
        return value

    @model_validator(mode="after")
    def _one_path_condition(self) -> MatchModel:
        given = {
            "path": self.path is not None,
            "path_prefix": self.path_prefix is not None,
            "path_regex": self.path_regex is not None,
        }
        if len(_given(given)) > 1:
            raise ValueError("give at most one of path, path_prefix and path_regex")
        return self


class AnyOfModel(_Strict):
    """A claim rule accepting any of several values: `{any_of: [a, b]}`."""

    any_of: list[JsonValue]

    @field_validator("any_of")
    @classmethod
    def _some(cls, value: list[JsonValue]) -> list[JsonValue]:
        if not value:
            raise ValueError("any_of lists at least one value")
        return value


_JSON_VALUE: TypeAdapter[JsonValue] = TypeAdapter(JsonValue, config=ConfigDict(strict=True))


def _claim_expectation(value: Any) -> AnyOfModel | JsonValue:
    """A mapping naming `any_of` is an `AnyOfModel`; anything else is one JSON value."""
    if isinstance(value, dict) and "any_of" in value:
        return AnyOfModel.model_validate(value)
    return _JSON_VALUE.validate_python(value)


ClaimExpectation = Annotated[
    Any, BeforeValidator(_claim_expectation, json_schema_input_type=AnyOfModel | JsonValue)
]


class RequireModel(_Strict):
    issuers: list[NonEmptyStr] | None = None
    encrypted: bool = False
    scopes: list[NonEmptyStr] = Field(default_factory=list)
    claims: dict[ClaimPath, ClaimExpectation] = Field(default_factory=dict)

    @field_validator("scopes")
    @classmethod
    def _scope_tokens(cls, value: list[str]) -> list[str]:
        for scope in value:
            if any(ch.isspace() or ch in '"\\' for ch in scope):
                raise ValueError(f"scope {scope!r} may not contain spaces, quotes or backslashes")
        return value


class HeaderSpecModel(_Strict):
    claim: ClaimPath
    encoding: Literal["plain", "json", "base64url"] = "plain"


def _header_spec(value: Any) -> Any:
    return {"claim": value} if isinstance(value, str) else value


# `x-user-id: sub` is short for `x-user-id: {claim: sub}`
HeaderSpec = Annotated[
    HeaderSpecModel,
    BeforeValidator(_header_spec, json_schema_input_type=ClaimPath | HeaderSpecModel),
]


class RouteModel(_Strict):
    name: NonEmptyStr
    match: MatchModel
    allow: Literal["anonymous"] | None = None
    deny: Literal[True] | None = None
    require: RequireModel | None = None
    headers: dict[str, HeaderSpec] = Field(default_factory=dict)
    unsafe_values: Literal["drop", "deny", "encode"] = "drop"
    mode: Literal["enforce", "dry_run"] = "enforce"
    dry_run_header: Annotated[str, Field(pattern=r"^[a-z0-9!#$%&'*+.^_`|~-]+$")] = (
        "x-ext-authz-dry-run"
    )
    log_subject: bool = False
    token_from: TokenFromModel | None = None

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, HeaderSpecModel]) -> dict[str, HeaderSpecModel]:
        for name in value:
            if not HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"{name!r} is reserved and cannot carry a claim")
        lowered = [name.lower() for name in value]
        if len(set(lowered)) != len(lowered):
            raise ValueError("a header name is mapped twice (names ignore case)")
        return value

    @field_validator("dry_run_header")
    @classmethod
    def _dry_run_header(cls, value: str, info: ValidationInfo) -> str:
        if value in RESERVED_HEADERS:
            raise ValueError(f"{value!r} is reserved")
        if value in {name.lower() for name in info.data.get("headers", {})}:
            raise ValueError(f"{value!r} is also a mapped header")
        return value

    @model_validator(mode="after")
    def _one_access(self) -> RouteModel:
        given = {
            "allow": self.allow is not None,
            "deny": self.deny is not None,
            "require": self.require is not None,
        }
        if len(_given(given)) != 1:
            raise ValueError("give exactly one of allow: anonymous, deny: true or require: {...}")
        return self


class PolicyModel(_Strict):
    """The top level."""

    realm: Annotated[str, Field(min_length=1, pattern=r'^[^"\\\x00-\x1f\x7f]+$')] = "ext-authz"
    issuers: dict[IssuerName, IssuerModel] = Field(default_factory=dict)
    keys: KeysSettingsModel = Field(default_factory=KeysSettingsModel)
    decryption: DecryptionModel | None = None
    routes: list[RouteModel] = Field(min_length=1)


def policy_json_schema() -> dict[str, Any]:
    """A JSON Schema of the whole policy file, for editors and CI linters. The server
    itself validates with the models above (which also check what a schema cannot:
    "exactly one of" choices, regexes compile) and the loader (references resolve,
    key files load)."""
    schema = PolicyModel.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ext-authz policy"
    return schema
