"""`ext-authz demo run --no-wait`: the whole demo (issuer, upstream, server, real Envoy) on
ports chosen at run time, with the nested JWE among its requests."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ext_authz.demo import encryption
from ext_authz.demo.issuer import DemoIssuer
from ext_authz.policy.loader import load_policy
from ext_authz.tokens.decrypt import decrypt_token
from tests.support.processes import free_port

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "policy.example.yaml"


def _policy_for_issuer_port(tmp_path: Path, port: int) -> Path:
    text = EXAMPLE.read_text(encoding="utf-8").replace("127.0.0.1:9100", f"127.0.0.1:{port}")
    assert f"127.0.0.1:{port}/corp" in text
    policy = tmp_path / "policy.yaml"
    policy.write_text(text, encoding="utf-8")
    return policy


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_smoke_run_allows_the_nested_jwe_and_the_upstream_sees_its_claims(
    tmp_path: Path,
) -> None:
    names = ("issuer", "upstream", "server", "envoy", "admin", "door", "caddy")
    ports = {name: free_port() for name in names}
    policy = _policy_for_issuer_port(tmp_path, ports["issuer"])
    cmd = [sys.executable, "-m", "ext_authz", "demo", "run", "--no-wait", "--config", str(policy)]
    for name, port in ports.items():
        cmd += [f"--{name}-port", str(port)]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, cwd=REPO, check=False, stdin=None
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "smoke test passed" in out
    # the four signed cases and the encrypted one, each as expected, through Envoy and
    # then through Caddy in front of the HTTP door
    results = re.findall(r"^(\d{3}) (.+?): (ok|UNEXPECTED.*)$", out, re.MULTILINE)
    one_leg = [("200", "ok"), ("401", "ok"), ("403", "ok"), ("200", "ok"), ("200", "ok")]
    assert [(status, verdict) for status, _, verdict in results] == one_leg * 2
    assert "nested JWE" in results[4][1]
    assert "nested JWE" in results[-1][1]
    seen = out.rsplit("nested JWE", 1)[1].splitlines()[1]
    assert "'x-user-id': 'carol'" in seen
    assert "'x-user-email': 'carol@corp.example'" in seen
    # the printed curl command carries a five-segment token
    envoy_url = f"http://127.0.0.1:{ports['envoy']}/"
    curls = [
        line for line in out.splitlines() if line.startswith("curl -i -H") and envoy_url in line
    ]
    assert len(curls) == 4
    jwe_token = curls[-1].split("Bearer ", 1)[1].split("'", 1)[0]
    assert jwe_token.count(".") == 4
    assert f"http://127.0.0.1:{ports['envoy']}/api/orders" in curls[-1]


def test_prepared_policy_loads_and_decrypts_what_the_demo_encrypts(tmp_path: Path) -> None:
    prepared = encryption.prepare(EXAMPLE, tmp_path)
    assert prepared is not None
    policy = load_policy(prepared.policy)
    assert policy.decryption is not None
    signed = DemoIssuer("http://127.0.0.1:9100").mint("corp", sub="carol")
    token = prepared.encrypt(signed)
    assert token.count(".") == 4
    decrypted = decrypt_token(token, policy.decryption)
    assert decrypted.nested_token() == signed
    assert decrypted.header["cty"] == "JWT"
    # the private key file is the server's alone
    assert (tmp_path / encryption.KEY_FILE).stat().st_mode & 0o077 == 0


def test_a_policy_with_its_own_decryption_keys_gets_no_demo_key(tmp_path: Path) -> None:
    document = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    document["decryption"] = {"jwks_env": "SOME_VARIABLE", "algorithms": ["RSA-OAEP-256"]}
    policy = tmp_path / "own.yaml"
    policy.write_text(yaml.safe_dump(document), encoding="utf-8")
    assert encryption.prepare(policy, tmp_path) is None
    assert not (tmp_path / encryption.KEY_FILE).exists()


def test_relative_key_files_stay_reachable_from_the_copy(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    issuer = DemoIssuer("http://127.0.0.1:9100")
    (source / "corp.jwks.json").write_text(json.dumps(issuer.jwks("corp")), encoding="utf-8")
    document = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    corp = document["issuers"]["corp"]
    del corp["jwks_uri"]
    corp["jwks_file"] = "corp.jwks.json"
    (source / "policy.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    prepared = encryption.prepare(source / "policy.yaml", out)
    assert prepared is not None
    assert load_policy(prepared.policy).decryption is not None
