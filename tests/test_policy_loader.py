"""Loading and compiling policy files: the brief's example, the shipped example, the CLI
check, and a table of broken policies with the exact line and field each one reports."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import ECKey, OctKey, RSAKey

from ext_authz.policy.loader import PolicyError, PolicyProblem, compile_policy_text, load_policy
from ext_authz.policy.model import (
    Access,
    ClaimRule,
    HeaderMapping,
    KeySourceKind,
    Policy,
)
from ext_authz.policy.schema import SIGNATURE_ALGORITHMS, parse_duration

REPO = Path(__file__).parents[1]
BRIEF = Path(__file__).parents[1].parent / "shared" / "BRIEF.md"
EXAMPLE_POLICY = REPO / "config" / "policy.example.yaml"
PROBLEM_LINE = re.compile(r"^(?P<file>.+):(?P<line>\d+): (?P<field>[\w.\[\]-]+): (?P<message>.+)$")


# key fixtures ----------------------------------------------------------------


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@cache
def ec_public_jwks() -> dict[str, Any]:
    key = ECKey.generate_key("P-256", auto_kid=True)
    return {"keys": [{**key.as_dict(private=False), "alg": "ES256", "use": "sig"}]}


@cache
def rsa_encryption_jwks() -> dict[str, Any]:
    key = RSAKey.generate_key(2048, private=True, auto_kid=True)
    return {"keys": [{**key.as_dict(private=True), "use": "enc", "alg": "RSA-OAEP-256"}]}


@cache
def weak_rsa_jwks() -> dict[str, Any]:
    public = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()  # noqa: S505
    numbers = public.public_numbers()
    jwk = {"kty": "RSA", "kid": "weak", "n": _b64url_uint(numbers.n), "e": "AQAB"}
    return {"keys": [jwk]}


def oct_jwks() -> dict[str, Any]:
    return {"keys": [{**OctKey.generate_key(256).as_dict(), "kid": "shared-secret"}]}


def write_json(path: Path, document: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document), encoding="utf-8")


def problems_of(tmp_path: Path, text: str) -> list[PolicyProblem]:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(policy_file)
    return caught.value.problems


def compile_ok(tmp_path: Path, text: str) -> Policy:
    return compile_policy_text(text, label="t.yaml", base_dir=tmp_path)


# the brief's example -----------------------------------------------------------


def brief_policy_text() -> str:
    if not BRIEF.is_file():
        pytest.skip(f"the product brief is not at {BRIEF}; its example policy cannot be checked")
    found = re.search(r"```yaml\n(.*?)```", BRIEF.read_text(encoding="utf-8"), re.DOTALL)
    if found is None:
        pytest.skip(f"{BRIEF} has no ```yaml block")
    return found.group(1)


@pytest.fixture
def brief_policy(tmp_path: Path) -> Policy:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(brief_policy_text(), encoding="utf-8")
    write_json(tmp_path / "keys" / "ci.jwks.json", ec_public_jwks())
    write_json(tmp_path / "keys" / "decrypt.jwks.json", rsa_encryption_jwks())
    return load_policy(policy_file)


def test_brief_example_issuers(brief_policy: Policy, tmp_path: Path) -> None:
    issuers = brief_policy.issuers
    assert sorted(issuers) == ["ci", "corp", "partner"]
    corp, partner, ci = issuers["corp"], issuers["partner"], issuers["ci"]

    assert corp.issuer == "https://login.example.com/"
    assert corp.audiences == frozenset({"orders-api"})
    assert corp.algorithms == frozenset({"RS256", "ES256"})
    assert corp.source.kind is KeySourceKind.JWKS_URI
    assert corp.source.url == "https://login.example.com/.well-known/jwks.json"

    assert partner.issuer == "https://idp.partner.example"
    assert partner.audiences == frozenset({"orders-api"})
    assert partner.algorithms == frozenset(SIGNATURE_ALGORITHMS)
    assert partner.source.kind is KeySourceKind.DISCOVERY
    assert partner.source.url == "https://idp.partner.example/.well-known/openid-configuration"

    assert ci.issuer == "ci-issuer"
    assert ci.audiences is None
    assert ci.source.kind is KeySourceKind.JWKS_FILE
    assert ci.source.path == (tmp_path / "keys" / "ci.jwks.json").resolve()
    assert ci.source.static_keys is not None
    expected_kid = ec_public_jwks()["keys"][0]["kid"]
    assert ci.source.static_keys.kids() == [expected_kid]

    assert {iss: p.name for iss, p in brief_policy.issuers_by_iss.items()} == {
        "https://login.example.com/": "corp",
        "https://idp.partner.example": "partner",
        "ci-issuer": "ci",
    }
    assert [i.name for i in brief_policy.remote_issuers] == ["corp", "partner"]


def test_brief_example_routes(brief_policy: Policy) -> None:
    routes = {r.name: r for r in brief_policy.routes}
    assert [r.name for r in brief_policy.routes] == [
        "health",
        "read-orders",
        "write-orders",
        "everything-else",
    ]
    assert routes["health"].access is Access.ANONYMOUS
    assert routes["health"].match.path == "/healthz"
    assert routes["everything-else"].access is Access.DENY
    assert routes["everything-else"].match.path_prefix == "/"

    read = routes["read-orders"]
    assert read.access is Access.REQUIRE
    assert read.match.path_prefix == "/api/orders"
    assert read.match.methods == frozenset({"GET", "HEAD"})
    assert read.requirement is not None
    assert read.requirement.issuers == frozenset({"corp", "partner"})
    assert read.requirement.scopes == ("orders:read",)
    assert read.headers == (
        HeaderMapping(header="x-user-id", claim="sub", path=("sub",)),
        HeaderMapping(header="x-user-email", claim="email", path=("email",)),
        HeaderMapping(header="x-tenant-id", claim="org.tenant", path=("org", "tenant")),
    )

    write = routes["write-orders"]
    assert write.requirement is not None
    assert write.requirement.issuers == frozenset({"corp"})
    assert write.requirement.claims == (
        ClaimRule(name="email_verified", path=("email_verified",), allowed=(True,)),
    )
    # every route's dry-run header is an identity header too: removed on every allow
    assert brief_policy.identity_headers == frozenset(
        {"x-user-id", "x-user-email", "x-tenant-id", "x-ext-authz-dry-run"}
    )


def test_brief_example_decryption(brief_policy: Policy) -> None:
    assert brief_policy.decryption is not None
    assert brief_policy.decryption.algorithms == frozenset({"RSA-OAEP-256", "ECDH-ES+A256KW"})
    assert brief_policy.decryption.encryptions == frozenset({"A256GCM"})


# the shipped example and the CLI --------------------------------------------------


def run_check_config(path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, "-m", "ext_authz", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
        check=False,
    )


def test_example_policy_loads() -> None:
    policy = load_policy(EXAMPLE_POLICY)
    assert sorted(policy.issuers) == ["corp", "partner"]
    assert [r.name for r in policy.routes] == [
        "health",
        "read-orders",
        "write-orders",
        "everything-else",
    ]
    assert policy.source == EXAMPLE_POLICY


def test_check_config_accepts_the_example() -> None:
    result = run_check_config(EXAMPLE_POLICY)
    assert result.returncode == 0, result.stderr
    assert "ok (2 issuers, 4 routes)" in result.stdout
    assert result.stderr == ""


def test_check_config_reports_every_problem_as_file_line_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        textwrap.dedent(
            """\
            issuers:
              corp:
                issuer: https://login.example.com/
                jwks_uri: http://login.example.com/jwks.json
            routes:
              - name: r
                match: { path_prefx: /api }
                deny: true
            """
        ),
        encoding="utf-8",
    )
    result = run_check_config(bad)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    parsed = [PROBLEM_LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m["file"], m["line"], m["field"]) for m in parsed if m] == [
        (str(bad), "4", "issuers.corp.jwks_uri"),
        (str(bad), "7", "routes[0].match.path_prefx"),
    ]


# broken policies ------------------------------------------------------------------

ISSUER = """\
issuers:
  corp:
    issuer: https://login.example.com/
    jwks_uri: https://login.example.com/jwks.json
"""


def with_issuer(routes: str) -> str:
    """ISSUER (lines 1-4) followed by `routes`, which starts on line 5."""
    return ISSUER + textwrap.dedent(routes)


@dataclass(frozen=True)
class Broken:
    text: str
    line: int
    field: str
    message: str
    files: Mapping[str, Callable[[], object]] = dataclasses.field(default_factory=dict)


BROKEN: dict[str, Broken] = {
    "unknown-field-typo": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match:
                  path_prefx: /api
                deny: true
            """
        ),
        8,
        "routes[0].match.path_prefx",
        "unknown field",
    ),
    "duplicate-yaml-key": Broken(
        textwrap.dedent(
            """\
            issuers:
              corp:
                issuer: https://login.example.com/
                jwks_uri: https://login.example.com/jwks.json
                audiences: [orders-api]
                audiences: [billing]
            routes:
              - { name: r, match: { path: /a }, deny: true }
            """
        ),
        6,
        "issuers.corp.audiences",
        "duplicate key",
    ),
    "two-key-sources": Broken(
        textwrap.dedent(
            """\
            issuers:
              corp:
                issuer: https://login.example.com/
                jwks_uri: https://login.example.com/jwks.json
                discovery: true
            routes:
              - { name: r, match: { path: /a }, deny: true }
            """
        ),
        2,
        "issuers.corp",
        "exactly one key source",
    ),
    "no-key-source": Broken(
        textwrap.dedent(
            """\
            issuers:
              corp:
                issuer: https://login.example.com/
                audiences: [orders-api]
            routes:
              - { name: r, match: { path: /a }, deny: true }
            """
        ),
        2,
        "issuers.corp",
        "(found: none)",
    ),
    "jwks-uri-plain-http": Broken(
        textwrap.dedent(
            """\
            issuers:
              corp:
                issuer: https://login.example.com/
                jwks_uri: http://login.example.com/jwks.json
            routes:
              - { name: r, match: { path: /a }, deny: true }
            """
        ),
        4,
        "issuers.corp.jwks_uri",
        "must use https",
    ),
    "jwks-uri-plain-http-private-address": Broken(
        textwrap.dedent(
            """\
            issuers:
              corp:
                issuer: https://login.example.com/
                jwks_uri: http://10.0.0.7/jwks.json
            routes:
              - { name: r, match: { path: /a }, deny: true }
            """
        ),
        4,
        "issuers.corp.jwks_uri",
        "must use https",
    ),
    "discovery-issuer-not-url": Broken(
        textwrap.dedent(
            """\
            issuers:
              ci:
                discovery: true
                issuer: ci-issuer
            routes:
              - { name: r, match: { path: /a }, deny: true }
            """
        ),
        4,
        "issuers.ci.issuer",
        "with discovery, the issuer must be a URL",
    ),
    "algorithm-hs256": Broken(
        textwrap.dedent(
            """\
            issuers:
              corp:
                issuer: https://login.example.com/
                jwks_uri: https://login.example.com/jwks.json
                algorithms: [RS256, HS256]
            routes:
              - { name: r, match: { path: /a }, deny: true }
            """
        ),
        5,
        "issuers.corp.algorithms[1]",
        "input should be 'RS256'",
    ),
    "algorithm-none": Broken(
        textwrap.dedent(
            """\
            issuers:
              corp:
                issuer: https://login.example.com/
                jwks_uri: https://login.example.com/jwks.json
                algorithms:
                  - none
            routes:
              - { name: r, match: { path: /a }, deny: true }
            """
        ),
        6,
        "issuers.corp.algorithms[0]",
        "input should be 'RS256'",
    ),
    "bad-regex": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match: { path_regex: '/api/([a-z' }
                deny: true
            """
        ),
        7,
        "routes[0].match.path_regex",
        "not a valid regular expression",
    ),
    "allow-and-deny": Broken(
        with_issuer(
            """\
            routes:
              - name: open
                match: { path: /a }
                deny: true
              - name: r
                match: { path: /b }
                allow: anonymous
                deny: true
            """
        ),
        9,
        "routes[1]",
        "give exactly one of allow: anonymous, deny: true or require",
    ),
    "require-unknown-issuer": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match: { path: /a }
                require:
                  issuers:
                    - corp
                    - crop
            """
        ),
        11,
        "routes[0].require.issuers[1]",
        "unknown issuer 'crop'",
    ),
    "duplicate-route-name": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match: { path: /a }
                deny: true
              - name: r
                match: { path: /b }
                deny: true
            """
        ),
        9,
        "routes[1].name",
        "route 'r' is repeated",
    ),
    "reserved-header-authorization": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match: { path: /a }
                require: { issuers: [corp] }
                headers:
                  Authorization: sub
            """
        ),
        9,
        "routes[0].headers",
        "'Authorization' is reserved",
    ),
    "reserved-header-host": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match: { path: /a }
                require: { issuers: [corp] }
                headers: { host: sub }
            """
        ),
        9,
        "routes[0].headers",
        "'host' is reserved",
    ),
    "invalid-header-name": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match: { path: /a }
                require: { issuers: [corp] }
                headers: { 'x user:id': sub }
            """
        ),
        9,
        "routes[0].headers",
        "is not a valid HTTP header name",
    ),
    "bad-duration": Broken(
        textwrap.dedent(
            """\
            issuers:
              corp:
                issuer: https://login.example.com/
                jwks_uri: https://login.example.com/jwks.json
                leeway: soon
            routes:
              - { name: r, match: { path: /a }, deny: true }
            """
        ),
        5,
        "issuers.corp.leeway",
        "a duration is a number of seconds",
    ),
    "min-ttl-over-max-ttl": Broken(
        textwrap.dedent(
            """\
            issuers:
              corp:
                issuer: https://login.example.com/
                jwks_uri: https://login.example.com/jwks.json
                keys:
                  max_ttl: 1h
                  min_ttl: 2h
            routes:
              - { name: r, match: { path: /a }, deny: true }
            """
        ),
        7,
        "issuers.corp.keys.min_ttl",
        "min_ttl is larger than max_ttl",
    ),
    "jwks-file-missing": Broken(
        textwrap.dedent(
            """\
            issuers:
              ci:
                issuer: ci-issuer
                jwks_file: keys/absent.json
            routes:
              - { name: r, match: { path: /a }, deny: true }
            """
        ),
        4,
        "issuers.ci.jwks_file",
        "cannot read keys/absent.json",
    ),
    "jwks-file-only-weak-rsa": Broken(
        textwrap.dedent(
            """\
            issuers:
              ci:
                issuer: ci-issuer
                jwks_file: keys/weak.json
            routes:
              - { name: r, match: { path: /a }, deny: true }
            """
        ),
        4,
        "issuers.ci.jwks_file",
        "no usable signature verification key",
        files={"keys/weak.json": weak_rsa_jwks},
    ),
    "jwks-file-only-oct": Broken(
        textwrap.dedent(
            """\
            issuers:
              ci:
                issuer: ci-issuer
                jwks_file: keys/oct.json
            routes:
              - { name: r, match: { path: /a }, deny: true }
            """
        ),
        4,
        "issuers.ci.jwks_file",
        "no usable signature verification key",
        files={"keys/oct.json": oct_jwks},
    ),
    "same-issuer-twice": Broken(
        textwrap.dedent(
            """\
            issuers:
              corp:
                issuer: https://login.example.com/
                jwks_uri: https://login.example.com/jwks.json
              corp-again:
                jwks_uri: https://login.example.com/other.json
                issuer: https://login.example.com/
            routes:
              - { name: r, match: { path: /a }, deny: true }
            """
        ),
        7,
        "issuers.corp-again.issuer",
        "already configured as 'corp'",
    ),
    "yaml-syntax-error": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match: { path: /a }
                deny: true: false
            """
        ),
        8,
        "",
        "mapping values are not allowed here",
    ),
    "empty-file": Broken("", 1, "", "the policy must be a YAML mapping"),
    "routes-empty": Broken(
        with_issuer(
            """\
            routes: []
            """
        ),
        5,
        "routes",
        "at least 1 item",
    ),
    "method-lower-case": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match:
                  path: /a
                  methods: [GET, post]
                deny: true
            """
        ),
        9,
        "routes[0].match.methods",
        "'post' is not an upper-case HTTP method",
    ),
    "path-not-absolute": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match:
                  path: api/orders
                deny: true
            """
        ),
        8,
        "routes[0].match.path",
        "must start with '/'",
    ),
    "any-of-empty": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match: { path: /a }
                require:
                  claims:
                    role:
                      any_of: []
            """
        ),
        11,
        "routes[0].require.claims.role.any_of",
        "any_of lists at least one value",
    ),
    # rules of the schema, checked once, there
    "dry-run-header-hop-by-hop": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match: { path: /a }
                mode: dry_run
                dry_run_header: connection
                deny: true
            """
        ),
        9,
        "routes[0].dry_run_header",
        "'connection' is reserved",
    ),
    "dry-run-header-also-mapped": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match: { path: /a }
                require: {}
                headers: { X-User: sub }
                dry_run_header: x-user
            """
        ),
        10,
        "routes[0].dry_run_header",
        "'x-user' is also a mapped header",
    ),
    "header-mapped-twice": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match: { path: /a }
                require: {}
                headers: { X-User: sub, x-user: email }
            """
        ),
        9,
        "routes[0].headers",
        "mapped twice",
    ),
    "header-claim-path-empty-part": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match: { path: /a }
                require: {}
                headers:
                  x-tenant: { claim: org..tenant }
            """
        ),
        10,
        "routes[0].headers.x-tenant.claim",
        "claim path 'org..tenant' has an empty part",
    ),
    "rule-claim-path-empty-part": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match: { path: /a }
                require:
                  claims:
                    org.: x
            """
        ),
        10,
        "routes[0].require.claims.org.",
        "has an empty part",
    ),
    "any-of-with-other-keys": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match: { path: /a }
                require:
                  claims:
                    role:
                      any_of: [a]
                      all_of: [b]
            """
        ),
        12,
        "routes[0].require.claims.role.all_of",
        "unknown field",
    ),
    "claim-rule-not-json": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match: { path: /a }
                require:
                  claims:
                    born: 2001-01-01
            """
        ),
        10,
        "routes[0].require.claims.born",
        "input was not a valid JSON value",
    ),
    "two-path-conditions": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match:
                  path: /a
                  path_prefix: /a
                deny: true
            """
        ),
        7,
        "routes[0].match",
        "at most one of path, path_prefix and path_regex",
    ),
    "wildcard-in-the-middle": Broken(
        with_issuer(
            """\
            routes:
              - name: r
                match: { hosts: ['api.*.example.com'] }
                deny: true
            """
        ),
        7,
        "routes[0].match.hosts",
        "a wildcard host looks like '*.example.com'",
    ),
    "issuer-name": Broken(
        textwrap.dedent(
            """\
            issuers:
              corp/eu:
                issuer: https://login.example.com/
                jwks_uri: https://login.example.com/jwks.json
            routes:
              - { name: r, match: { path: /a }, deny: true }
            """
        ),
        2,
        "issuers.corp/eu",
        "issuer names use letters, digits",
    ),
    "decryption-two-key-sources": Broken(
        textwrap.dedent(
            """\
            decryption:
              jwks_env: DECRYPTION_KEYS
              jwks_file: keys/dec.json
              algorithms: [RSA-OAEP-256]
              encryptions: [A256GCM]
            routes:
              - { name: r, match: { path: /a }, deny: true }
            """
        ),
        1,
        "decryption",
        "give exactly one of jwks_file, jwks or jwks_env",
    ),
    "infinite-duration": Broken(
        textwrap.dedent(
            """\
            keys:
              max_stale: .inf
            routes:
              - { name: r, match: { path: /a }, deny: true }
            """
        ),
        2,
        "keys.max_stale",
        "finite number",
    ),
}


@pytest.mark.parametrize("case", [pytest.param(c, id=name) for name, c in BROKEN.items()])
def test_broken_policy_reports_line_field_and_message(tmp_path: Path, case: Broken) -> None:
    for relative, make in case.files.items():
        write_json(tmp_path / relative, make())
    problems = problems_of(tmp_path, case.text)
    assert [(p.line, p.field) for p in problems] == [(case.line, case.field)], problems
    (problem,) = problems
    assert case.message in problem.message
    assert problem.file == str(tmp_path / "policy.yaml")
    prefix = f"{tmp_path / 'policy.yaml'}:{case.line}: "
    assert str(problem) == prefix + (f"{case.field}: " if case.field else "") + problem.message


@pytest.mark.parametrize(
    "jwks_uri",
    [
        pytest.param("https://login.example.com/jwks.json", id="https"),
        pytest.param("http://127.0.0.1:9100/jwks.json", id="http-ipv4-loopback"),
        pytest.param("http://localhost:9100/jwks.json", id="http-localhost"),
        pytest.param("http://[::1]:9100/jwks.json", id="http-ipv6-loopback"),
    ],
)
def test_accepted_jwks_uri(tmp_path: Path, jwks_uri: str) -> None:
    policy = compile_ok(
        tmp_path,
        textwrap.dedent(
            f"""\
            issuers:
              corp:
                issuer: https://login.example.com/
                jwks_uri: {jwks_uri}
            routes:
              - {{ name: r, match: {{ path: /a }}, deny: true }}
            """
        ),
    )
    assert policy.issuers["corp"].source.url == jwks_uri


def test_errors_in_several_routes_are_all_reported_sorted_by_line(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        routes:
          - name: one
            match: { path: /a, methods: [get] }
            deny: true
          - name: two
            match: { path: /b }
            require: { issuers: [nobody] }
          - name: three
            match: { path: c }
            deny: true
          - name: two
            match: { path: /d }
            allow: anonymous
          - name: five
            match: { path: /e }
            allow: anonymous
            headers: { cookie: sub }
        issuers:
          corp:
            issuer: https://login.example.com/
            jwks_uri: https://login.example.com/jwks.json
            leeway: soon
            audiences: [orders-api]
            audiences: [billing-api]
        """
    )
    problems = problems_of(tmp_path, text)
    assert [(p.line, p.field) for p in problems] == [
        (3, "routes[0].match.methods"),
        (7, "routes[1].require.issuers[0]"),
        (9, "routes[2].match.path"),
        (11, "routes[3].name"),  # repeats routes[1]
        (17, "routes[4].headers"),
        (22, "issuers.corp.leeway"),
        (24, "issuers.corp.audiences"),
    ]
    assert [p.message for p in problems][-2:] == [
        "a duration is a number of seconds or a string like 30s, 10m, 24h",
        "duplicate key",
    ]


def test_policy_error_message_lists_every_problem(tmp_path: Path) -> None:
    text = with_issuer(
        """\
        routes:
          - { name: a, match: { path: x }, deny: true }
          - { name: b, match: { path: y }, deny: true }
        """
    )
    with pytest.raises(PolicyError) as caught:
        compile_policy_text(text, label="t.yaml", base_dir=tmp_path)
    assert str(caught.value).splitlines() == [
        "t.yaml:6: routes[0].match.path: must start with '/'",
        "t.yaml:7: routes[1].match.path: must start with '/'",
    ]


# durations and immutability ------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        pytest.param("30", 30.0, id="bare-number"),
        pytest.param("30s", 30.0, id="seconds"),
        pytest.param("10m", 600.0, id="minutes"),
        pytest.param("1.5h", 5400.0, id="fractional-hours"),
        pytest.param("250ms", 0.25, id="milliseconds"),
        pytest.param("2d", 172800.0, id="days"),
    ],
)
def test_durations_parse_to_seconds(tmp_path: Path, written: str, seconds: float) -> None:
    policy = compile_ok(
        tmp_path,
        textwrap.dedent(
            f"""\
            issuers:
              corp:
                issuer: https://login.example.com/
                jwks_uri: https://login.example.com/jwks.json
                leeway: {written}
                keys: {{ refetch_cooldown: {written} }}
            routes:
              - {{ name: r, match: {{ path: /a }}, deny: true }}
            """
        ),
    )
    corp = policy.issuers["corp"]
    assert corp.leeway == pytest.approx(seconds)
    assert corp.keys.refetch_cooldown == pytest.approx(seconds)
    assert parse_duration(written) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "written",
    [
        pytest.param("soon", id="word"),
        pytest.param("10 minutes", id="spelled-unit"),
        pytest.param("-5s", id="negative"),
        pytest.param("1h30m", id="compound"),
    ],
)
def test_durations_refused(written: str) -> None:
    with pytest.raises(ValueError, match="a duration is"):
        parse_duration(written)


def test_parse_duration_refuses_booleans() -> None:
    with pytest.raises(ValueError, match="a duration is"):
        parse_duration(True)


@pytest.fixture
def small_policy(tmp_path: Path) -> Policy:
    return compile_ok(
        tmp_path,
        with_issuer(
            """\
            routes:
              - name: r
                match: { path_prefix: /api }
                require: { issuers: [corp] }
                headers: { x-user-id: sub }
            """
        ),
    )


@pytest.mark.parametrize(
    ("target", "attribute"),
    [
        pytest.param("policy", "routes", id="policy-routes"),
        pytest.param("policy", "realm", id="policy-realm"),
        pytest.param("route", "name", id="route-name"),
        pytest.param("route", "access", id="route-access"),
        pytest.param("match", "path_prefix", id="match-path-prefix"),
        pytest.param("issuer", "audiences", id="issuer-audiences"),
        pytest.param("requirement", "issuers", id="requirement-issuers"),
    ],
)
def test_compiled_objects_are_frozen(small_policy: Policy, target: str, attribute: str) -> None:
    route = small_policy.routes[0]
    objects: dict[str, object] = {
        "policy": small_policy,
        "route": route,
        "match": route.match,
        "issuer": small_policy.issuers["corp"],
        "requirement": route.requirement,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(objects[target], attribute, None)


def test_compiled_issuer_maps_are_read_only(small_policy: Policy) -> None:
    issuers: Any = small_policy.issuers
    with pytest.raises(TypeError):
        issuers["intruder"] = small_policy.issuers["corp"]


def test_missing_decryption_key_file_is_reported(tmp_path: Path) -> None:
    text = with_issuer(
        """\
        decryption:
          jwks_file: keys/absent.jwks.json
          algorithms: [RSA-OAEP-256]
          encryptions: [A256GCM]
        routes:
          - { name: r, match: { path: /a }, deny: true }
        """
    )
    problems = problems_of(tmp_path, text)
    assert [(p.line, p.field) for p in problems] == [(6, "decryption.jwks_file")]


def test_error_in_a_repeated_key_points_at_the_value_used(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        issuers:
          corp:
            issuer: https://login.example.com/
            jwks_uri: https://login.example.com/jwks.json
            leeway: 1s
            leeway: soon
        routes:
          - { name: r, match: { path: /a }, deny: true }
        """
    )
    problems = problems_of(tmp_path, text)
    assert sorted((p.line, p.message) for p in problems) == [
        (6, "a duration is a number of seconds or a string like 30s, 10m, 24h"),
        (6, "duplicate key"),
    ]


def test_a_broken_route_does_not_hide_or_invent_other_problems(tmp_path: Path) -> None:
    """When the document is invalid, the parts valid on their own are still compiled:
    their own problems are reported in the same run, and a valid decryption section
    keeps backing the issuers' unsigned_encrypted_keys (no invented problems)."""
    from tests.support.jwe_tokens import SHARED_CORP, decryption_yaml, jwe_policy_yaml
    from tests.support.tokens import CORP

    text = jwe_policy_yaml(
        CORP,
        decryption=decryption_yaml(keys=[SHARED_CORP]),
        unsigned_keys={CORP.name: [SHARED_CORP.kid]},
        routes="routes:\n  - { name: r, match: { pth: /a }, deny: true }\n"
        "  - { name: s, match: { path: /b }, require: { issuers: [nobody] } }\n",
    )
    problems = problems_of(tmp_path, text)
    assert [(p.field, p.message) for p in problems] == [
        ("routes[0].match.pth", "unknown field"),
        ("routes[1].require.issuers[0]", "unknown issuer 'nobody'"),
    ]
