"""Request forms an upstream reads as the same resource are judged by the same route,
and route regexes run in linear time.

The table of forms lives in docs/policy.md; `test_documented_forms` checks every row
of it against the real pipeline, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import re
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ext_authz.authorizer import Authorizer
from ext_authz.decision import Allow, Deny
from ext_authz.envoy.server import AuthorizationService
from ext_authz.errors import DenialReason
from ext_authz.policy.loader import PolicyError, compile_policy_text
from ext_authz.policy.model import Policy
from ext_authz.policy.routes import MAX_PATH_LENGTH, choose_route, normal_host, normal_path
from ext_authz.request import RequestView
from tests.support.doubles import FixedClock, StaticKeys
from tests.support.grpc_check import check_request, verdict
from tests.support.tokens import NOW

DOCS = Path(__file__).resolve().parents[1] / "docs" / "policy.md"


def _documented() -> tuple[str, list[tuple[str, str, str]]]:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("#### Path and host forms", 1)[1]
    policy = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    table = section.split("<!-- request-forms:start -->", 1)[1].split("<!-- request-forms:end")[0]
    rows = []
    for line in table.splitlines()[3:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append((cells[0].strip("`"), cells[1].strip("`"), cells[2]))
    return policy, rows


POLICY_TEXT, ROWS = _documented()


def _policy(tmp_path: Path, text: str) -> Policy:
    return compile_policy_text(text, label="t.yaml", base_dir=tmp_path)


def _check(policy: Policy, path: str, host: str = "www.example.com") -> Allow | Deny:
    authorizer = Authorizer(lambda: policy, StaticKeys({}), FixedClock(NOW))
    return authorizer.check(RequestView(method="GET", path=path, host=host, headers={}))


def test_the_documented_table_has_every_form_the_docs_promise() -> None:
    paths = {path for path, _, _ in ROWS}
    for form in ("/admin;jsessionid=x", "/admin;/x", "/admin.json", "/ADMIN/x"):
        assert form in paths
    for form in ("/secret/", "/secret;x", "/reports/1/"):
        assert form in paths
    hosts = {host for _, host, _ in ROWS}
    assert {"ADMIN.example.com.", "admin.example.com:", "admin.example.com.:80"} <= hosts


@pytest.mark.parametrize(("path", "host", "outcome"), ROWS, ids=[f"{p} {h}" for p, h, _ in ROWS])
def test_documented_forms(tmp_path: Path, path: str, host: str, outcome: str) -> None:
    decision = _check(_policy(tmp_path, POLICY_TEXT), path, host)
    if outcome.startswith("400"):
        assert isinstance(decision, Deny)
        assert decision.reason is DenialReason.REQUEST_INVALID
        assert f"`{decision.reason.value}`" in outcome
        return
    route = outcome.strip("`")
    if route == "open":
        assert isinstance(decision, Allow) and decision.route == "open"
    else:
        assert isinstance(decision, Deny), decision
        assert (decision.reason, decision.route) == (DenialReason.ROUTE_DENY, route)


def test_the_match_result_carries_the_normal_form(tmp_path: Path) -> None:
    policy = _policy(tmp_path, POLICY_TEXT)
    view = RequestView(method="GET", path="/admin;x/y;z", host="WWW.Example.com.:", headers={})
    choice = choose_route(policy.routes, view)
    assert choice.route is not None and choice.route.name == "admin"
    assert (choice.target.path, choice.target.host) == ("/admin/y", "www.example.com")


@pytest.mark.parametrize(
    ("written", "normal"),
    [
        ("/a;b", "/a"),
        ("/a;b/c;d;e/", "/a/c/"),
        ("/;x", "/"),
        ("/a%3Bb", "/a%3Bb"),  # an escaped ';' is part of the segment
    ],
)
def test_normal_path(written: str, normal: str) -> None:
    assert normal_path(written) == normal


@pytest.mark.parametrize(
    ("written", "normal"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("example.com:", "example.com"),
        ("example.com.:80", "example.com:80"),
        ("example.com..", "example.com"),
        ("[::1]:", "[::1]"),
        ("[::1]:8080", "[::1]:8080"),
        ("", ""),
    ],
)
def test_normal_host(written: str, normal: str) -> None:
    assert normal_host(written) == normal


def test_host_patterns_are_normalised_at_load(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        "routes:\n  - { name: r, match: { hosts: [Admin.Example.COM., '*.Ops.Example.com.'] }"
        ", deny: true }\n",
    )
    assert policy.routes[0].match.hosts == ("admin.example.com", "*.ops.example.com")


def test_two_host_values_are_a_400_through_grpc(tmp_path: Path) -> None:
    policy = _policy(tmp_path, POLICY_TEXT)
    service = AuthorizationService(Authorizer(lambda: policy, StaticKeys({}), FixedClock(NOW)))
    joined = verdict(service.Check(check_request("/", host="admin.example.com,a.test"), None))
    assert joined.status == 400
    assert 'error="invalid_request"' in joined.headers["www-authenticate"]


# --- regexes on RE2 -------------------------------------------------------------------

CATASTROPHIC = r"/files/([a-z0-9]+-?)*\.pdf"


def test_a_backtracking_pattern_matches_in_linear_time(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        textwrap.dedent(
            f"""\
            routes:
              - {{ name: pdf, match: {{ path_regex: '{CATASTROPHIC}' }}, deny: true }}
              - {{ name: open, match: {{ path_prefix: / }}, allow: anonymous }}
            """
        ),
    )
    # Python's re takes seconds on 33 bytes of this (and doubles per character).
    started = time.perf_counter()
    for size in (26, 33, 64, 4096):
        decision = _check(policy, "/files/" + "a" * size + "!")
        assert isinstance(decision, Allow) and decision.route == "open"
    assert time.perf_counter() - started < 0.5
    refused = _check(policy, "/files/report-2024.pdf")
    assert isinstance(refused, Deny) and refused.route == "pdf"


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"/(a)\1", "invalid escape sequence"),
        (r"/a(?=b)", "invalid perl operator"),
        (r"/a(?<!b)", "invalid"),
        (r"/x{1001}", "invalid repetition size"),
    ],
)
def test_what_re2_cannot_compile_is_refused_at_load(
    tmp_path: Path, pattern: str, reason: str
) -> None:
    text = f"routes:\n  - name: r\n    match:\n      path_regex: '{pattern}'\n    deny: true\n"
    with pytest.raises(PolicyError) as caught:
        _policy(tmp_path, text)
    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (4, "routes[0].match.path_regex")
    assert problem.message.startswith("not a valid regular expression (RE2 syntax): ")
    assert reason in problem.message


def test_case_insensitive_regex(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        "routes:\n"
        "  - { name: r, match: { path_regex: '/Admin/[a-z]+', case_sensitive: false }"
        ", deny: true }\n"
        "  - { name: open, match: { path_prefix: / }, allow: anonymous }\n",
    )
    for path in ("/admin/x", "/ADMIN/X", "/aDmIn/Xy/"):
        decision = _check(policy, path)
        assert isinstance(decision, Deny) and decision.route == "r", path


@pytest.mark.parametrize("length", [MAX_PATH_LENGTH, MAX_PATH_LENGTH + 1])
def test_an_over_long_path_is_refused_never_passed_on(tmp_path: Path, length: int) -> None:
    policy = _policy(tmp_path, POLICY_TEXT)
    path = "/reports/" + "1" * (length - len("/reports/"))
    decision = _check(policy, path)
    assert isinstance(decision, Deny)
    if length > MAX_PATH_LENGTH:
        assert decision.reason is DenialReason.REQUEST_INVALID
    else:
        assert decision.route == "reports"


def test_the_regex_module_is_re2() -> None:
    policy_regex = (
        compile_policy_text(
            "routes:\n  - { name: r, match: { path_regex: /a }, deny: true }\n",
            label="t",
            base_dir=Path("."),
        )
        .routes[0]
        .match.path_regex
    )
    assert policy_regex is not None
    assert not isinstance(policy_regex, re.Pattern)


_SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._", min_size=1, max_size=8)
_PARAMETER = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789=,-", max_size=8)


@given(
    st.lists(
        st.sampled_from(["admin", "ops", "secret", "reports", "1", "x"]) | _SEGMENT, max_size=4
    ),
    st.lists(st.tuples(st.integers(0, 3), _PARAMETER), max_size=3),
    st.booleans(),
)
def test_parameters_and_a_trailing_slash_never_change_the_route(
    segments: list[str], parameters: list[tuple[int, str]], slash: bool
) -> None:
    plain = "/" + "/".join(segments)
    written = list(segments) or [""]
    for index, parameter in parameters:
        written[index % len(written)] += ";" + parameter
    spelled = "/" + "/".join(written) + ("/" if slash and segments else "")
    policy = _FORMS_POLICY
    plain_route = choose_route(policy.routes, _view(plain)).route
    spelled_route = choose_route(policy.routes, _view(spelled)).route
    assert plain_route is not None and spelled_route is not None
    assert spelled_route.name == plain_route.name, (plain, spelled)


def _view(path: str) -> RequestView:
    return RequestView(method="GET", path=path, host="www.example.com", headers={})


_FORMS_POLICY = compile_policy_text(POLICY_TEXT, label="t.yaml", base_dir=Path("."))


def test_explain_shows_the_path_as_matched(tmp_path: Path) -> None:
    from ext_authz.explain import explain

    policy = _policy(tmp_path, POLICY_TEXT)
    view = RequestView(
        method="GET", path="/admin;jsessionid=x/users", host="WWW.Example.com.", headers={}
    )
    text = explain(policy, StaticKeys({}), view, FixedClock(NOW)).text()
    assert "path /admin/users host=www.example.com" in text
    assert "admin: MATCH" in text
