"""The policy file's schema, as pydantic models.

These models only describe and type-check the document; `loader.py` turns a valid
document into the immutable runtime objects of `model.py`, resolving files and
cross-references. Unknown keys are errors, so a typo never silently weakens a rule.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ext_authz import algorithms
from ext_authz.keys.redis_url import CacheUrlError, parse_cache_url
from ext_authz.tokens.claims import media_type

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
_RESERVED_HEADERS = frozenset(
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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


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


class DecryptionModel(_Strict):
    jwks_file: NonEmptyStr | None = None
    jwks: dict[str, Any] | None = None
    jwks_env: NonEmptyStr | None = None
    algorithms: list[KeyManagementAlgorithm] = Field(min_length=1)
    encryptions: list[ContentEncryption] = Field(min_length=1)


class MatchModel(_Strict):
    path: NonEmptyStr | None = None
    path_prefix: NonEmptyStr | None = None
    path_regex: NonEmptyStr | None = None
    methods: list[NonEmptyStr] | None = None
    hosts: list[NonEmptyStr] | None = None
    context_extensions: dict[str, str] | None = None

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
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
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
        if value is not None and not value:
            raise ValueError("must list at least one host when present")
        return value


class AnyOfModel(_Strict):
    any_of: list[Any] = Field(min_length=1)


class RequireModel(_Strict):
    issuers: list[NonEmptyStr] | None = None
    encrypted: bool = False
    scopes: list[NonEmptyStr] = Field(default_factory=list)
    claims: dict[NonEmptyStr, Any] = Field(default_factory=dict)

    @field_validator("scopes")
    @classmethod
    def _scope_tokens(cls, value: list[str]) -> list[str]:
        for scope in value:
            if any(ch.isspace() or ch in '"\\' for ch in scope):
                raise ValueError(f"scope {scope!r} may not contain spaces, quotes or backslashes")
        return value


class HeaderSpecModel(_Strict):
    claim: NonEmptyStr
    encoding: Literal["plain", "json", "base64url"] = "plain"


class RouteModel(_Strict):
    name: NonEmptyStr
    match: MatchModel
    allow: Literal["anonymous"] | None = None
    deny: Literal[True] | None = None
    require: RequireModel | None = None
    headers: dict[str, NonEmptyStr | HeaderSpecModel] = Field(default_factory=dict)
    unsafe_values: Literal["drop", "deny", "encode"] = "drop"
    mode: Literal["enforce", "dry_run"] = "enforce"
    dry_run_header: Annotated[str, Field(pattern=r"^[a-z0-9!#$%&'*+.^_`|~-]+$")] = (
        "x-ext-authz-dry-run"
    )
    log_subject: bool = False
    token_from: TokenFromModel | None = None

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            lowered = name.lower()
            if not _HEADER_NAME.match(lowered):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if lowered in _RESERVED_HEADERS:
                raise ValueError(f"{name!r} is reserved and cannot carry a claim")
        return value


class PolicyModel(_Strict):
    """The top level. Issuers and routes are checked one by one (`IssuerModel`,
    `RouteModel`) so that one broken entry does not hide the problems of the others."""

    realm: Annotated[str, Field(min_length=1, pattern=r'^[^"\\\x00-\x1f\x7f]+$')] = "ext-authz"
    issuers: dict[Annotated[str, Field(min_length=1)], dict[str, Any]] = Field(default_factory=dict)
    keys: KeysSettingsModel = Field(default_factory=KeysSettingsModel)
    decryption: DecryptionModel | None = None
    routes: list[dict[str, Any]] = Field(min_length=1)


def policy_json_schema() -> dict[str, Any]:
    """A JSON Schema of the whole policy file, for editors and CI linters. The server
    itself validates with the models above (which also check what a schema cannot:
    regexes compile, references resolve, key files load)."""
    schema = PolicyModel.model_json_schema()
    definitions = schema.setdefault("$defs", {})
    for model in (IssuerModel, RouteModel):
        part = model.model_json_schema()
        definitions.update(part.pop("$defs", {}))
        definitions[model.__name__] = part
    schema["properties"]["issuers"]["additionalProperties"] = {"$ref": "#/$defs/IssuerModel"}
    schema["properties"]["routes"]["items"] = {"$ref": "#/$defs/RouteModel"}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ext-authz policy"
    return schema
