"""A broken policy edit never kills the server.

Whatever bytes the policy file or a key file it names holds, loading ends in a
`PolicyError` with `file:line: message`: `check-config` prints it, start-up stops with
it, and a reload logs it and keeps the running policy.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ext_authz.policy.loader import PolicyError, compile_policy_text, load_policy
from ext_authz.policy.yaml_source import MAX_DEPTH, MAX_NODES
from tests.support.grpc_check import CheckClient
from tests.support.processes import free_port, running, wait_for_grpc_serving
from tests.support.tokens import CORP, policy_yaml

GOOD = """\
issuers:
  ci:
    issuer: ci-issuer
    jwks_file: keys.json
routes:
  - { name: r, match: { path: /a }, allow: anonymous }
"""
DEEP_JSON = b'{"keys": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
ALIAS_BOMB = "\n".join(
    [
        "realm: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]",
        *(f"x{i}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(9)),
        "routes: [{ name: r, match: { path: /a }, allow: anonymous }]",
    ]
)


@dataclass(frozen=True)
class Bad:
    text: str
    line: int
    message: str
    key_file: bytes | None = None


def _deep_block(depth: int) -> str:
    return "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "x: 1\n"


BAD: dict[str, Bad] = {
    "nul-in-a-value": Bad(GOOD.replace("ci-issuer", "ci-\x00issuer"), 3, "U+0000"),
    "form-feed-between-lines": Bad(GOOD.replace("routes:", "\x0croutes:"), 5, "U+000C"),
    "escape-in-a-comment": Bad(GOOD + "# \x1b[31mred\n", 7, "U+001B"),
    "del-in-a-key": Bad(GOOD.replace("issuer:", "iss\x7fuer:"), 3, "U+007F"),
    "c1-control": Bad(GOOD.replace("/a", "/\x9ba"), 6, "U+009B"),
    "flow-nested-thousands-deep": Bad("realm: " + "[" * 5000 + "]" * 5000 + "\n", 1, "nested"),
    "block-nested-thousands-deep": Bad(_deep_block(1500), MAX_DEPTH + 1, "nested deeper"),
    "alias-bomb": Bad(ALIAS_BOMB, 1, "anchors and aliases are not allowed"),
    "one-anchor": Bad(GOOD.replace("  ci:", "  ci: &c"), 2, "anchors and aliases"),
    "too-many-nodes": Bad(
        "routes: []\nrealm:\n" + "  - x\n" * MAX_NODES, MAX_NODES - 2, "more than"
    ),
    "integer-too-long": Bad(GOOD + "realm: " + "9" * 5000 + "\n", 1, "unreadable value"),
    "key-file-nested-json": Bad(GOOD, 4, "nested too deeply", key_file=DEEP_JSON),
}


def _write(tmp_path: Path, case: Bad) -> Path:
    policy = tmp_path / "policy.yaml"
    policy.write_text(case.text, encoding="utf-8")
    key_file = case.key_file if case.key_file is not None else json.dumps(CORP.jwks()).encode()
    (tmp_path / "keys.json").write_bytes(key_file)
    return policy


@pytest.mark.parametrize("case", [pytest.param(c, id=n) for n, c in BAD.items()])
def test_a_broken_file_is_a_policy_error_with_its_line(tmp_path: Path, case: Bad) -> None:
    policy = _write(tmp_path, case)
    started = time.perf_counter()
    with pytest.raises(PolicyError) as caught:
        load_policy(policy)
    # a guard against blow-ups (the alias bomb took minutes before), not a speed test:
    # the bound is loose enough for a loaded 2-core machine
    assert time.perf_counter() - started < 15.0
    (problem,) = caught.value.problems
    assert (problem.file, problem.line) == (str(policy), case.line), problem
    assert case.message in problem.message


def test_the_good_file_loads(tmp_path: Path) -> None:
    policy = _write(tmp_path, Bad(GOOD, 0, ""))
    assert load_policy(policy).routes[0].name == "r"


def test_decryption_key_file_nested_too_deeply(tmp_path: Path) -> None:
    (tmp_path / "dec.json").write_bytes(DEEP_JSON)
    text = policy_yaml(CORP) + (
        "decryption:\n  jwks_file: dec.json\n  algorithms: [RSA-OAEP-256]\n"
        "  encryptions: [A256GCM]\n"
    )
    with pytest.raises(PolicyError) as caught:
        compile_policy_text(text, label="p.yaml", base_dir=tmp_path)
    assert "nested too deeply" in str(caught.value)


def _failing_compile(_text: str) -> object:
    raise KeyError("a bug")


def test_an_unexpected_error_while_loading_is_still_a_policy_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last line of defence: a bug in a validator must not escape as a crash.
    import ext_authz.policy.loader as loader

    fail: Callable[[str], object] = _failing_compile
    monkeypatch.setattr(loader, "load_yaml", fail)
    with pytest.raises(PolicyError) as caught:
        compile_policy_text(GOOD, label="p.yaml", base_dir=tmp_path)
    assert str(caught.value) == "p.yaml:1: cannot be loaded (KeyError); see the log for details"


@pytest.mark.parametrize("name", ["nul-in-a-value", "alias-bomb", "key-file-nested-json"])
def test_check_config_and_serve_print_file_line_not_a_traceback(tmp_path: Path, name: str) -> None:
    case = BAD[name]
    policy = _write(tmp_path, case)
    for command in (["check-config", str(policy)], ["serve", "--config", str(policy)]):
        done = subprocess.run(
            [sys.executable, "-m", "ext_authz", *command],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done
        assert f"{policy}:{case.line}: " in done.stderr
        assert "Traceback" not in done.stderr


def test_a_reload_of_a_broken_file_keeps_the_running_policy(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    good = policy_yaml(CORP)
    policy.write_text(good, encoding="utf-8")
    port = free_port()
    cmd = [
        *(sys.executable, "-m", "ext_authz", "serve", "--config", str(policy)),
        *("--listen", f"127.0.0.1:{port}", "--reload-interval", "0.2", "--shutdown-delay", "0"),
    ]
    with running(cmd, name="ext-authz") as server:
        assert wait_for_grpc_serving("127.0.0.1", port, 30.0, server)
        client = CheckClient(f"127.0.0.1:{port}")
        try:
            assert client.check("/healthz").status == 200
            for bad in ("nul-in-a-value", "alias-bomb", "block-nested-thousands-deep"):
                refused = server.stderr_text(1_000_000).count("policy reload refused")
                opened = good.replace("/healthz", "/opened")
                policy.write_text(BAD[bad].text.replace("/a", "/opened") + opened, "utf-8")
                deadline = time.monotonic() + 10
                while server.stderr_text(1_000_000).count("policy reload refused") == refused:
                    assert time.monotonic() < deadline, server.stderr_text()
                    time.sleep(0.1)
                assert server.proc.poll() is None
                assert client.check("/healthz").status == 200
                assert client.check("/opened").status == 403
            assert "Traceback" not in server.stderr_text(1_000_000)
        finally:
            client.close()
