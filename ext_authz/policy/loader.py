"""Load a policy file: YAML with line numbers, schema check, then compile.

Every problem is collected (not just the first) as `file:line: field.path: message`.
The result is either a complete immutable `Policy` or a `PolicyError` listing them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ext_authz.keys.decryption_keys import DecryptionKeyError, load_decryption_keys
from ext_authz.keys.jwks import JwksError, KeySet, parse_jwks, parse_jwks_bytes
from ext_authz.keys.urls import key_url_problem
from ext_authz.policy.model import (
    Access,
    ClaimRule,
    HeaderMapping,
    IssuerPolicy,
    KeySettings,
    KeySource,
    KeySourceKind,
    Policy,
    Requirement,
    Route,
    RouteMatch,
    UnsafeValues,
)
from ext_authz.policy.schema import (
    SIGNATURE_ALGORITHMS,
    IssuerModel,
    KeysSettingsModel,
    MatchModel,
    PolicyModel,
    RouteModel,
)
from ext_authz.policy.token_from import route_token_sources, token_header_names, token_sources
from ext_authz.policy.yaml_source import FieldPath, YamlDocument, YamlSyntaxError, load_yaml
from ext_authz.tokens.decrypt import DecryptionConfig

log = logging.getLogger("ext_authz.policy")
M = TypeVar("M", bound=BaseModel)

MAX_POLICY_BYTES = 4 * 1024 * 1024
MAX_KEY_FILE_BYTES = 1024 * 1024
_RESERVED_DRY_RUN = frozenset({"host", "authorization", "content-length", "content-type", "cookie"})
_ISSUER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class PolicyError(Exception):
    def __init__(self, problems: list[PolicyProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def format_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load_policy(path: str | Path) -> Policy:
    """Read, validate and compile a policy file. Raises `PolicyError`."""
    file = Path(path)
    label = str(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise PolicyError([PolicyProblem(label, 1, "", f"cannot read: {exc.strerror}")]) from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError([PolicyProblem(label, 1, "", "file is larger than 4 MiB")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError([PolicyProblem(label, 1, "", "not UTF-8 text")]) from None
    return compile_policy_text(text, label=label, base_dir=file.resolve().parent, source=file)


def compile_policy_text(
    text: str, *, label: str, base_dir: Path, source: Path | None = None
) -> Policy:
    try:
        document = load_yaml(text)
    except YamlSyntaxError as exc:
        raise PolicyError([PolicyProblem(label, exc.line, "", exc.message)]) from None
    compiler = _Compiler(document, label, base_dir)
    return compiler.run(source)


class _Compiler:
    def __init__(self, document: YamlDocument, label: str, base_dir: Path) -> None:
        self.doc = document
        self.label = label
        self.base_dir = base_dir
        self.problems: list[PolicyProblem] = []
        self.files: list[Path] = []

    def error(self, path: FieldPath, message: str) -> None:
        self.problems.append(
            PolicyProblem(self.label, self.doc.line_of(path), format_path(path), message)
        )

    def run(self, source: Path | None) -> Policy:
        for path, line in self.doc.duplicates:
            self.problems.append(
                PolicyProblem(self.label, line, format_path(path), "duplicate key")
            )
        if not isinstance(self.doc.data, Mapping):
            self.error((), "the policy must be a YAML mapping with 'issuers' and 'routes'")
            raise PolicyError(self.problems)
        model = self._validate(PolicyModel, self.doc.data, ())
        if model is None:
            raise PolicyError(self._sorted())
        policy = self._compile(model, source)
        if self.problems:
            raise PolicyError(self._sorted())
        return policy

    def _validate(self, cls: type[M], data: Any, where: FieldPath) -> M | None:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors(include_input=False, include_url=False):
                loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
                self.error((*where, *loc), _pydantic_message(err["msg"]))
            return None

    def _sorted(self) -> list[PolicyProblem]:
        return sorted(self.problems, key=lambda p: (p.line, p.field))

    def _compile(self, model: PolicyModel, source: Path | None) -> Policy:
        issuers: dict[str, IssuerPolicy] = {}
        by_iss: dict[str, IssuerPolicy] = {}
        valid_issuers: dict[str, IssuerModel] = {}
        for name, raw_issuer in model.issuers.items():
            issuer_model = self._validate(IssuerModel, raw_issuer, ("issuers", name))
            if issuer_model is None:
                continue
            valid_issuers[name] = issuer_model
            compiled = self._issuer(name, issuer_model, model.keys)
            if compiled is None:
                continue
            if compiled.issuer in by_iss:
                self.error(
                    ("issuers", name, "issuer"),
                    f"the same issuer is already configured as '{by_iss[compiled.issuer].name}'",
                )
                continue
            issuers[name] = compiled
            by_iss[compiled.issuer] = compiled
        routes: list[Route] = []
        names: set[str] = set()
        for index, raw_route in enumerate(model.routes):
            route_model = self._validate(RouteModel, raw_route, ("routes", index))
            if route_model is None:
                continue
            if route_model.name in names:
                self.error(("routes", index, "name"), f"route '{route_model.name}' is repeated")
            names.add(route_model.name)
            route = self._route(index, route_model, model.issuers.keys())
            if route is not None:
                routes.append(route)
        routes = route_token_sources(routes, issuers)
        identity_headers = frozenset(m.header for r in routes for m in r.headers) | {
            r.dry_run_header for r in routes if r.dry_run
        }
        decryption = self._decryption(model)
        self._check_unsigned_encrypted(issuers, decryption)
        return Policy(
            realm=model.realm,
            issuers=MappingProxyType(issuers),
            issuers_by_iss=MappingProxyType(by_iss),
            routes=tuple(routes),
            identity_headers=identity_headers,
            decryption=decryption,
            source=source,
            referenced_files=tuple(self.files),
            token_headers=token_header_names(routes),
        )

    # issuers ---------------------------------------------------------------

    def _issuer(
        self, name: str, model: IssuerModel, defaults: KeysSettingsModel
    ) -> IssuerPolicy | None:
        base: FieldPath = ("issuers", name)
        ok = True
        if not _ISSUER_NAME.match(name):
            self.error(base, "issuer names use letters, digits, '_', '.' and '-' (64 at most)")
            ok = False
        settings = _key_settings(defaults, model, self.base_dir)
        if settings.min_ttl > settings.max_ttl:
            self.error((*base, "keys", "min_ttl"), "min_ttl is larger than max_ttl")
            ok = False
        chosen = [
            k
            for k, present in (
                ("jwks_uri", model.jwks_uri is not None),
                ("discovery", model.discovery),
                ("jwks_file", model.jwks_file is not None),
                ("jwks", model.jwks is not None),
            )
            if present
        ]
        if len(chosen) != 1:
            found = ", ".join(chosen) if chosen else "none"
            self.error(
                base,
                f"give exactly one key source: jwks_uri, discovery: true, jwks_file or jwks "
                f"(found: {found})",
            )
            return None
        source = self._key_source(base, model, chosen[0])
        if source is None or not ok:
            return None
        algorithms = frozenset(model.algorithms or SIGNATURE_ALGORITHMS)
        return IssuerPolicy(
            name=name,
            issuer=model.issuer,
            audiences=frozenset(model.audiences) if model.audiences is not None else None,
            algorithms=algorithms,
            source=source,
            leeway=model.leeway,
            keys=settings,
            require_encryption=model.require_encryption,
            unsigned_encrypted_keys=frozenset(model.unsigned_encrypted_keys),
            token_sources=token_sources(model.token_from),
            token_types=frozenset(model.typ) if model.typ is not None else None,
        )

    def _key_source(self, base: FieldPath, model: IssuerModel, kind: str) -> KeySource | None:
        if kind == "jwks_uri":
            assert model.jwks_uri is not None
            problem = key_url_problem(model.jwks_uri)
            if problem:
                self.error((*base, "jwks_uri"), f"jwks_uri {problem}")
                return None
            return KeySource(KeySourceKind.JWKS_URI, url=model.jwks_uri)
        if kind == "discovery":
            problem = key_url_problem(model.issuer)
            if problem:
                self.error(
                    (*base, "issuer"), f"with discovery, the issuer must be a URL: it {problem}"
                )
                return None
            url = model.issuer.rstrip("/") + "/.well-known/openid-configuration"
            return KeySource(KeySourceKind.DISCOVERY, url=url)
        if kind == "jwks_file":
            assert model.jwks_file is not None
            keys = self._key_file((*base, "jwks_file"), model.jwks_file)
            if keys is None:
                return None
            path = (self.base_dir / model.jwks_file).resolve()
            return KeySource(KeySourceKind.JWKS_FILE, path=path, static_keys=keys)
        assert model.jwks is not None
        try:
            parsed = parse_jwks(model.jwks)
        except JwksError as exc:
            self.error((*base, "jwks"), str(exc))
            return None
        return (
            self._usable((*base, "jwks"), parsed.keys, parsed.skipped)
            and KeySource(KeySourceKind.INLINE, static_keys=parsed.keys)
        ) or None

    def _key_file(self, where: FieldPath, relative: str) -> KeySet | None:
        path = (self.base_dir / relative).resolve()
        self.files.append(path)
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            self.error(where, f"cannot read {relative}: {exc.strerror}")
            return None
        if len(data) > MAX_KEY_FILE_BYTES:
            self.error(where, f"{relative} is larger than 1 MiB")
            return None
        try:
            parsed = parse_jwks_bytes(data)
        except JwksError as exc:
            self.error(where, f"{relative}: {exc}")
            return None
        return parsed.keys if self._usable(where, parsed.keys, parsed.skipped) else None

    def _decryption(self, model: PolicyModel) -> DecryptionConfig | None:
        dec = model.decryption
        if dec is None:
            return None
        given = [
            name
            for name, value in (
                ("jwks_file", dec.jwks_file),
                ("jwks", dec.jwks),
                ("jwks_env", dec.jwks_env),
            )
            if value is not None
        ]
        if len(given) != 1:
            self.error(("decryption",), "give exactly one of jwks_file, jwks or jwks_env")
            return None
        where: FieldPath = ("decryption", given[0])
        path = None
        if dec.jwks_file is not None:
            path = (self.base_dir / dec.jwks_file).resolve()
            self.files.append(path)
        try:
            keys = load_decryption_keys(path=path, inline=dec.jwks, env=dec.jwks_env)
        except DecryptionKeyError as exc:
            self.error(where, str(exc))
            return None
        algorithms = frozenset(dec.algorithms)
        unusable = [a for a in sorted(algorithms) if not any(k.fits(a) for k in keys.keys)]
        for alg in unusable:
            log.warning(
                "no decryption key fits an allowed algorithm",
                extra={"field": "decryption.algorithms", "alg": alg},
            )
        return DecryptionConfig.build(keys, algorithms, frozenset(dec.encryptions))

    def _check_unsigned_encrypted(
        self, issuers: Mapping[str, IssuerPolicy], decryption: DecryptionConfig | None
    ) -> None:
        owners: dict[str, str] = {}
        for name, issuer in issuers.items():
            where: FieldPath = ("issuers", name, "unsigned_encrypted_keys")
            for kid in sorted(issuer.unsigned_encrypted_keys):
                key = decryption.keys.by_kid.get(kid) if decryption else None
                if key is None:
                    self.error(where, f"no decryption key has kid '{kid}'")
                elif not key.symmetric:
                    self.error(
                        where,
                        f"decryption key '{kid}' is not symmetric: anyone with the public key "
                        "could forge claims",
                    )
                elif kid in owners:
                    self.error(
                        where, f"decryption key '{kid}' is already the key of '{owners[kid]}'"
                    )
                else:
                    owners[kid] = name

    def _usable(self, where: FieldPath, keys: KeySet, skipped: tuple[str, ...]) -> bool:
        for note in skipped:
            log.warning("policy key skipped", extra={"field": format_path(where), "why": note})
        if not keys.keys:
            detail = f" ({'; '.join(skipped)})" if skipped else ""
            self.error(where, f"no usable signature verification key{detail}")
            return False
        return True

    # routes ----------------------------------------------------------------

    def _route(self, index: int, model: RouteModel, issuer_names: Iterable[str]) -> Route | None:
        base: FieldPath = ("routes", index)
        modes = [
            m
            for m, present in (
                ("allow", model.allow is not None),
                ("deny", model.deny is not None),
                ("require", model.require is not None),
            )
            if present
        ]
        if len(modes) != 1:
            self.error(base, "give exactly one of allow: anonymous, deny: true or require: {...}")
            return None
        match = self._match((*base, "match"), model.match)
        headers = tuple(
            HeaderMapping(
                header=name.lower(),
                claim=spec if isinstance(spec, str) else spec.claim,
                path=_claim_path(spec if isinstance(spec, str) else spec.claim),
                encoding="plain" if isinstance(spec, str) else spec.encoding,
            )
            for name, spec in model.headers.items()
        )
        for mapping in headers:
            if not all(mapping.path):
                self.error(
                    (*base, "headers", mapping.header),
                    f"claim path '{mapping.claim}' has an empty part",
                )
        if model.dry_run_header in _RESERVED_DRY_RUN or model.dry_run_header in {
            h.header for h in headers
        }:
            self.error((*base, "dry_run_header"), "must not be a reserved or mapped header")
        lowered = [h.header for h in headers]
        if len(set(lowered)) != len(lowered):
            self.error((*base, "headers"), "a header name is mapped twice (names ignore case)")
        requirement = None
        access = Access.ANONYMOUS if modes[0] == "allow" else Access(modes[0])
        if model.require is not None:
            known = set(issuer_names)
            if not known:
                self.error((*base, "require"), "no issuers are configured to require tokens from")
            wanted = model.require.issuers
            if wanted is None:
                accepted = frozenset(known)
            else:
                for j, issuer in enumerate(wanted):
                    if issuer not in known:
                        self.error((*base, "require", "issuers", j), f"unknown issuer '{issuer}'")
                accepted = frozenset(wanted)
            rules = []
            for claim, expected in model.require.claims.items():
                rule = self._claim_rule((*base, "require", "claims", claim), claim, expected)
                if rule is not None:
                    rules.append(rule)
            requirement = Requirement(
                issuers=accepted,
                scopes=tuple(model.require.scopes),
                claims=tuple(rules),
                encrypted=model.require.encrypted,
            )
        if match is None:
            return None
        return Route(
            name=model.name,
            match=match,
            access=access,
            requirement=requirement,
            headers=headers,
            unsafe_values=UnsafeValues(model.unsafe_values),
            dry_run=model.mode == "dry_run",
            dry_run_header=model.dry_run_header,
            log_subject=model.log_subject,
            token_sources=token_sources(model.token_from),
        )

    def _match(self, where: FieldPath, model: MatchModel) -> RouteMatch | None:
        paths = [p for p in (model.path, model.path_prefix, model.path_regex) if p is not None]
        if len(paths) > 1:
            self.error(where, "give at most one of path, path_prefix and path_regex")
            return None
        hosts = None
        if model.hosts is not None:
            hosts = tuple(h.lower() for h in model.hosts)
            for j, host in enumerate(hosts):
                if "*" in host and not (host.startswith("*.") and "*" not in host[2:]):
                    self.error((*where, "hosts", j), "a wildcard host looks like '*.example.com'")
        return RouteMatch(
            path=model.path,
            path_prefix=model.path_prefix,
            path_regex=re.compile(model.path_regex) if model.path_regex is not None else None,
            methods=frozenset(model.methods) if model.methods is not None else None,
            hosts=hosts,
            context_extensions=tuple(sorted((model.context_extensions or {}).items())),
        )

    def _claim_rule(self, where: FieldPath, claim: str, expected: Any) -> ClaimRule | None:
        path = _claim_path(claim)
        if not all(path):
            self.error(where, f"claim path '{claim}' has an empty part")
            return None
        if isinstance(expected, Mapping) and "any_of" in expected:
            if set(expected) != {"any_of"}:
                self.error(where, "a claim rule with any_of has no other keys")
                return None
            values = expected["any_of"]
            if not isinstance(values, list) or not values:
                self.error((*where, "any_of"), "any_of lists at least one value")
                return None
            allowed = tuple(values)
        else:
            allowed = (expected,)
        for value in allowed:
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                self.error(where, "expected values must be JSON values")
                return None
        return ClaimRule(name=claim, path=path, allowed=allowed)


def _claim_path(claim: str) -> tuple[str, ...]:
    return tuple(claim.split("."))


def _key_settings(defaults: KeysSettingsModel, model: IssuerModel, base_dir: Path) -> KeySettings:
    override = model.keys

    def pick(name: str) -> Any:
        value = getattr(override, name) if override is not None else None
        return value if value is not None else getattr(defaults, name)

    return KeySettings(
        default_ttl=pick("default_ttl"),
        min_ttl=pick("min_ttl"),
        max_ttl=pick("max_ttl"),
        refetch_cooldown=pick("refetch_cooldown"),
        max_stale=pick("max_stale"),
        fetch_timeout=pick("fetch_timeout"),
        max_jwks_bytes=pick("max_jwks_bytes"),
        cache=defaults.cache,
        cache_dir=(base_dir / defaults.cache_dir).resolve() if defaults.cache_dir else None,
    )


def _pydantic_message(message: str) -> str:
    replacements = {
        "Extra inputs are not permitted": "unknown field",
        "Field required": "required field is missing",
    }
    message = replacements.get(message, message)
    message = message.removeprefix("Value error, ")
    return message[:1].lower() + message[1:]
