"""Load a policy file: YAML with line numbers, schema check, then compile.

The schema (`schema.py`) judges the document; this module reads files, maps problems
to lines, resolves what spans sections (issuer references, key files, decryption
keys) and compiles the immutable `Policy`. Every problem is collected (not just the
first) as `file:line: field.path: message`. The result is either a complete `Policy`
or a `PolicyError` listing them, and never another exception.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ext_authz.keys.decryption_keys import DecryptionKeyError, load_decryption_keys
from ext_authz.keys.jwks import JwksError, KeySet, parse_jwks, parse_jwks_bytes
from ext_authz.keys.source import KeySettings, KeySource, KeySourceKind
from ext_authz.keys.urls import key_url_problem
from ext_authz.policy.model import (
    Access,
    ClaimRule,
    HeaderMapping,
    IssuerPolicy,
    Policy,
    Requirement,
    Route,
    RouteMatch,
    UnsafeValues,
)
from ext_authz.policy.path_regex import compile_path_regex
from ext_authz.policy.routes import normal_host, trim_slash
from ext_authz.policy.schema import (
    SIGNATURE_ALGORITHMS,
    AnyOfModel,
    DecryptionModel,
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
    """Validate and compile policy text. Raises `PolicyError`, and nothing else: a
    policy edit must never take a running server down with it."""
    try:
        document = load_yaml(text)
        return _Compiler(document, label, base_dir).run(source)
    except YamlSyntaxError as exc:
        raise PolicyError([PolicyProblem(label, exc.line, "", exc.message)]) from None
    except PolicyError:
        raise
    except Exception as exc:
        log.exception("policy loading failed unexpectedly")
        problem = f"cannot be loaded ({type(exc).__name__}); see the log for details"
        raise PolicyError([PolicyProblem(label, 1, "", problem)]) from None


class _Compiler:
    def __init__(self, document: YamlDocument, label: str, base_dir: Path) -> None:
        self.doc = document
        self.label = label
        self.base_dir = base_dir
        self.problems: list[PolicyProblem] = []
        self.files: list[Path] = []
        self.decryption_broken = False  # reported already: its key ids are unknown

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
        model = self._validate(PolicyModel, self.doc.data)
        if model is not None:
            policy = self._compile(model, model.routes, source)
        else:
            policy = self._compile(*self._valid_parts(self.doc.data), source)
        if self.problems:
            raise PolicyError(self._sorted())
        return policy

    def _validate(self, cls: type[M], data: Any) -> M | None:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors(include_input=False, include_url=False):
                loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
                if loc[-1:] == ("[key]",):  # a bad mapping key: point at the key
                    loc = loc[:-1]
                self.error(loc, _pydantic_message(err["msg"]))
            return None

    def _valid_parts(self, data: Mapping[str, Any]) -> tuple[PolicyModel, list[RouteModel | None]]:
        """The issuers and routes that are valid on their own, when the whole is not
        (its problems are reported already): compiling them reports the problems of
        references and key files in the same run. Route positions are kept."""

        def valid(cls: type[M], part: Any) -> M | None:
            try:
                return cls.model_validate(part)
            except ValidationError:
                return None

        issuers = data.get("issuers")
        routes = data.get("routes")
        decryption = data.get("decryption")
        if decryption is not None:
            decryption = valid(DecryptionModel, decryption)
            self.decryption_broken = decryption is None
        parts = PolicyModel.model_construct(
            issuers={
                name: issuer
                for name, part in (issuers.items() if isinstance(issuers, Mapping) else ())
                if (issuer := valid(IssuerModel, part)) is not None
            },
            keys=valid(KeysSettingsModel, data.get("keys", {})) or KeysSettingsModel(),
            decryption=decryption,
            routes=[],
            realm="-",
        )
        return parts, [valid(RouteModel, r) for r in routes] if isinstance(routes, list) else []

    def _sorted(self) -> list[PolicyProblem]:
        return sorted(self.problems, key=lambda p: (p.line, p.field))

    def _compile(
        self, model: PolicyModel, route_models: Sequence[RouteModel | None], source: Path | None
    ) -> Policy:
        issuers: dict[str, IssuerPolicy] = {}
        by_iss: dict[str, IssuerPolicy] = {}
        for name, issuer_model in model.issuers.items():
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
        declared = self.doc.data.get("issuers")
        known = set(declared) if isinstance(declared, Mapping) else set()
        for index, route_model in enumerate(route_models):
            if route_model is None:  # invalid on its own, reported already
                continue
            if route_model.name in names:
                self.error(("routes", index, "name"), f"route '{route_model.name}' is repeated")
            names.add(route_model.name)
            routes.append(self._route(index, route_model, known))
        routes = route_token_sources(routes, issuers)
        # Every route's dry-run header, dry-run or not: a client must never be able to
        # send its own to the upstream.
        identity_headers = frozenset(m.header for r in routes for m in r.headers) | {
            r.dry_run_header for r in routes
        }
        decryption = self._decryption(model)
        if not self.decryption_broken:
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
        settings = _key_settings(defaults, model, self.base_dir)
        ok = settings.min_ttl <= settings.max_ttl  # top-level and per-issuer values meet
        if not ok:
            self.error((*base, "keys", "min_ttl"), "min_ttl is larger than max_ttl")
        source = self._key_source(base, model, settings)
        if source is None or not ok:
            return None
        algorithms = frozenset(model.algorithms or SIGNATURE_ALGORITHMS)
        return IssuerPolicy(
            name=name,
            audiences=frozenset(model.audiences) if model.audiences is not None else None,
            algorithms=algorithms,
            source=source,
            leeway=model.leeway,
            require_encryption=model.require_encryption,
            unsigned_encrypted_keys=frozenset(model.unsigned_encrypted_keys),
            token_sources=token_sources(model.token_from),
            token_types=frozenset(model.typ) if model.typ is not None else None,
        )

    def _key_source(
        self, base: FieldPath, model: IssuerModel, settings: KeySettings
    ) -> KeySource | None:
        kind = model.key_source
        iss = model.issuer
        if kind == "jwks_uri":
            assert model.jwks_uri is not None
            problem = key_url_problem(model.jwks_uri)
            if problem:
                self.error((*base, "jwks_uri"), f"jwks_uri {problem}")
                return None
            return KeySource(iss, KeySourceKind.JWKS_URI, settings, url=model.jwks_uri)
        if kind == "discovery":
            problem = key_url_problem(model.issuer)
            if problem:
                self.error(
                    (*base, "issuer"), f"with discovery, the issuer must be a URL: it {problem}"
                )
                return None
            url = model.issuer.rstrip("/") + "/.well-known/openid-configuration"
            return KeySource(iss, KeySourceKind.DISCOVERY, settings, url=url)
        if kind == "jwks_file":
            assert model.jwks_file is not None
            keys = self._key_file((*base, "jwks_file"), model.jwks_file)
            if keys is None:
                return None
            path = (self.base_dir / model.jwks_file).resolve()
            return KeySource(iss, KeySourceKind.JWKS_FILE, settings, path=path, static_keys=keys)
        assert model.jwks is not None
        try:
            parsed = parse_jwks(model.jwks)
        except JwksError as exc:
            self.error((*base, "jwks"), str(exc))
            return None
        return (
            self._usable((*base, "jwks"), parsed.key_set, parsed.skipped)
            and KeySource(iss, KeySourceKind.INLINE, settings, static_keys=parsed.key_set)
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
        return parsed.key_set if self._usable(where, parsed.key_set, parsed.skipped) else None

    def _decryption(self, model: PolicyModel) -> DecryptionConfig | None:
        dec = model.decryption
        if dec is None:
            return None
        given = "jwks_file" if dec.jwks_file else "jwks" if dec.jwks is not None else "jwks_env"
        where: FieldPath = ("decryption", given)
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
        unusable = [
            a for a in sorted(algorithms) if not any(k.fits(a) for k in keys.decryption_keys)
        ]
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
                key = decryption.key_set.by_kid.get(kid) if decryption else None
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
        if not keys.verification_keys:
            detail = f" ({'; '.join(skipped)})" if skipped else ""
            self.error(where, f"no usable signature verification key{detail}")
            return False
        return True

    # routes ----------------------------------------------------------------

    def _route(self, index: int, model: RouteModel, known: set[str]) -> Route:
        base: FieldPath = ("routes", index)
        headers = tuple(
            HeaderMapping(
                header=name.lower(),
                claim=spec.claim,
                path=_claim_path(spec.claim),
                encoding=spec.encoding,
            )
            for name, spec in model.headers.items()
        )
        requirement = None
        if model.require is not None:
            if not known:
                self.error((*base, "require"), "no issuers are configured to require tokens from")
            wanted = model.require.issuers
            for j, issuer in enumerate(wanted or ()):
                if issuer not in known:
                    self.error((*base, "require", "issuers", j), f"unknown issuer '{issuer}'")
            requirement = Requirement(
                issuers=frozenset(known if wanted is None else wanted),
                scopes=tuple(model.require.scopes),
                claims=tuple(
                    ClaimRule(
                        name=claim,
                        path=_claim_path(claim),
                        allowed=tuple(rule.any_of) if isinstance(rule, AnyOfModel) else (rule,),
                    )
                    for claim, rule in model.require.claims.items()
                ),
                encrypted=model.require.encrypted,
            )
        return Route(
            name=model.name,
            match=_match(model.match),
            access=Access.REQUIRE
            if model.require is not None
            else Access.DENY
            if model.deny
            else Access.ANONYMOUS,
            requirement=requirement,
            headers=headers,
            unsafe_values=UnsafeValues(model.unsafe_values),
            dry_run=model.mode == "dry_run",
            dry_run_header=model.dry_run_header,
            log_subject=model.log_subject,
            token_sources=token_sources(model.token_from),
        )


def _match(model: MatchModel) -> RouteMatch:
    def fold(path: str | None) -> str | None:
        return path if path is None or model.case_sensitive else path.lower()

    exact = fold(model.path)
    return RouteMatch(
        path=trim_slash(exact) if exact is not None else None,
        path_prefix=fold(model.path_prefix),
        path_regex=(
            compile_path_regex(model.path_regex, case_sensitive=model.case_sensitive)
            if model.path_regex is not None
            else None
        ),
        methods=frozenset(model.methods) if model.methods is not None else None,
        hosts=tuple(normal_host(h) for h in model.hosts) if model.hosts is not None else None,
        context_extensions=tuple(sorted((model.context_extensions or {}).items())),
        case_sensitive=model.case_sensitive,
    )


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
