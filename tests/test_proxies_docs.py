"""docs/proxies.md shows the nginx and Caddy configs the tests run, byte for byte."""

from __future__ import annotations

from pathlib import Path

from ext_authz.deploy.proxies import ProxySite, caddyfile, nginx_server_block

DOC = Path(__file__).resolve().parent.parent / "docs" / "proxies.md"
SITE = ProxySite("0.0.0.0:8080", "127.0.0.1:9080", "127.0.0.1:9200")


def test_the_documented_nginx_config_is_the_tested_one() -> None:
    assert "```nginx\nhttp {\n" + nginx_server_block(SITE) + "}\n```" in DOC.read_text()


def test_the_documented_caddyfile_is_the_tested_one() -> None:
    assert "```caddyfile\n" + caddyfile(SITE, global_options=False) + "```" in DOC.read_text()


def test_every_proxy_is_marked_tested_or_not() -> None:
    text = DOC.read_text()
    for heading in (
        "## Envoy, gRPC door (tested here)",
        "## Envoy, HTTP door (tested here)",
        "## nginx (tested here",
        "## Caddy (tested here",
        "## Traefik (not run here",
    ):
        assert heading in text
