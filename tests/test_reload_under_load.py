"""Reloads under load: a real `ext-authz serve` process answers checks from several
client threads over gRPC while its policy, and the issuers in it, change twenty times.

The key servers are real loopback JWKS servers. Tokens naming unknown `kid`s are in the
mix, so checks on a replaced policy ask its stopping key manager for refetches. No
RPC may fail, no answer may be a 5xx, and a token of the issuer configured in every
version is allowed throughout.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import grpc

from tests.support import tokens
from tests.support.grpc_check import CheckClient
from tests.support.jwks_server import JwksServer, jwks_server
from tests.support.keys import Remote, policy_text
from tests.support.processes import free_port, running, wait_for_grpc_serving
from tests.support.tokens import CORP, EDGE, PARTNER, mint_live

RELOADS = 20
CLIENTS = 4
RELOAD_TIMEOUT = 15.0


def _versions(
    corp: JwksServer, corp_too: JwksServer, partner: JwksServer, edge: JwksServer
) -> list[str]:
    """Four policies: issuers come and go, and corp's key source moves between two
    servers publishing the same keys (so its keys are fetched anew)."""
    corp_a = Remote("corp", CORP.iss, corp)
    corp_b = Remote("corp", CORP.iss, corp_too, keys={"refetch_cooldown": "1s"})
    part = Remote("partner", PARTNER.iss, partner, "ES256")
    edg = Remote("edge", EDGE.iss, edge, "EdDSA")
    return [
        policy_text([corp_a, part]),
        policy_text([corp_a, edg]),
        policy_text([corp_b, part, edg]),
        policy_text([corp_b], {"fetch_timeout": "2s"}),
    ]


class ReloadCounter:
    """Counts the server's "policy reloaded" lines, reading its log file as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.count = 0
        self.partial = b""

    def __call__(self) -> int:
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            if b"policy reloaded" not in line:
                continue
            record = json.loads(line)
            if isinstance(record, dict) and record.get("msg") == "policy reloaded":
                self.count += 1
        return self.count


def _not_seen(n: int, stderr: str) -> str:
    """The server's own log lines (decision lines left out), for a failure message."""
    own = [line for line in stderr.splitlines() if "decision_id" not in line]
    return f"reload {n} not seen: " + "\n".join(own[-20:])


def test_reloads_under_load_fail_no_rpc_and_give_no_5xx(tmp_path: Path) -> None:
    with (
        jwks_server(CORP.jwks()) as corp,
        jwks_server(CORP.jwks()) as corp_too,
        jwks_server(PARTNER.jwks()) as partner,
        jwks_server(EDGE.jwks()) as edge,
    ):
        versions = _versions(corp, corp_too, partner, edge)
        policy = tmp_path / "policy.yaml"
        policy.write_text(versions[0], encoding="utf-8")
        port = free_port()
        command = [sys.executable, "-m", "ext_authz", "serve", "--config", str(policy)]
        command += ["--listen", f"127.0.0.1:{port}", "--reload-interval", "0.05"]
        command += ["--grace", "1", "--shutdown-delay", "0"]
        with running(command, name="reload-under-load") as server:
            assert wait_for_grpc_serving("127.0.0.1", port, 30, proc=server), server.stderr_text()
            stop = threading.Event()
            results: Counter[tuple[str, int]] = Counter()
            failures: list[str] = []
            lock = threading.Lock()

            def client(seed: int) -> None:
                kinds: list[tuple[str, tokens.TestIssuer, dict[str, str]]] = [
                    ("corp", CORP, {}),
                    ("partner", PARTNER, {}),
                    ("edge", EDGE, {}),
                    ("unknown_kid", CORP, {"kid": ""}),
                ]
                checker = CheckClient(f"127.0.0.1:{port}")
                try:
                    i = seed
                    while not stop.is_set():
                        kind, issuer, headers = kinds[i % len(kinds)]
                        i += 1
                        if kind == "unknown_kid":
                            headers = {"kid": uuid.uuid4().hex}
                        token = mint_live(issuer, headers=headers) if headers else mint_live(issuer)
                        try:
                            status = checker.check("/orders", token).status
                        except grpc.RpcError as exc:
                            with lock:
                                failures.append(f"{kind}: {exc.code()}")
                            continue
                        with lock:
                            results[(kind, status)] += 1
                finally:
                    checker.close()

            threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
            for thread in threads:
                thread.start()
            try:
                time.sleep(0.3)
                reloads = ReloadCounter(server.stderr_path)
                for n in range(1, RELOADS + 1):
                    text = versions[n % len(versions)] + f"# reload {n}\n"
                    policy.write_text(text, encoding="utf-8")
                    deadline = time.monotonic() + RELOAD_TIMEOUT
                    while reloads() < n:
                        assert time.monotonic() < deadline, _not_seen(n, server.stderr_text())
                        assert server.proc.poll() is None, server.stderr_text()
                        time.sleep(0.02)
                    time.sleep(0.1)  # checks run on the new policy for a moment
            finally:
                stop.set()
                for thread in threads:
                    thread.join(30)
            assert server.proc.poll() is None, server.stderr_text()
    assert failures == []
    statuses = {status for _, status in results}
    assert statuses <= {200, 401}, results
    assert {status for (kind, status) in results if kind == "corp"} == {200}, results
    assert {status for (kind, status) in results if kind == "unknown_kid"} == {401}, results
    assert sum(n for (kind, _), n in results.items() if kind == "corp") >= RELOADS
