"""Compressed key sets and discovery documents: a real loopback HTTP server answers with
`Content-Encoding: gzip` (single and stacked) whatever the request asked for.

A body under a kilobyte can inflate to hundreds of megabytes; the fetcher must never
inflate it. The peak memory of each fetch is measured with `tracemalloc`.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ext_authz.keys.fetch import FetchError, FetchErrorKind, HttpJwksFetcher
from ext_authz.policy.loader import compile_policy_text
from ext_authz.policy.model import IssuerPolicy
from tests.support.tokens import CORP

INFLATED = 256 * 1024 * 1024  # what the bomb inflates to
PEAK_LIMIT = 16 * 1024 * 1024  # a fetch may use far less; inflating once breaks this


def _gzip_zeros(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    chunk = bytes(1024 * 1024)
    parts = [packer.compress(chunk) for _ in range(size // len(chunk))]
    return b"".join(parts) + packer.flush()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """Gzip of 256 MiB of zeros (about 250 KB: under the 256 KiB `max_jwks_bytes`)."""
    return _gzip_zeros(INFLATED)


@dataclass
class Answer:
    body: bytes = b""
    encoding: str | None = None


@dataclass
class EncodingServer:
    """Serves `/jwks.json` and the discovery document with the answers set by a test,
    and records the `Accept-Encoding` of every request."""

    httpd: ThreadingHTTPServer
    answers: dict[str, Answer] = field(default_factory=dict)
    asked: list[str | None] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"


@contextmanager
def encoding_server() -> Iterator[EncodingServer]:
    holder: list[EncodingServer] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server = holder[0]
            server.asked.append(self.headers.get("accept-encoding"))
            answer = server.answers.get(self.path)
            if answer is None:
                self.send_response(404)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            try:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                if answer.encoding is not None:
                    self.send_header("content-encoding", answer.encoding)
                self.send_header("content-length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: object) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server = EncodingServer(httpd)
    holder.append(server)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def server() -> Iterator[EncodingServer]:
    with encoding_server() as running:
        yield running


def issuer(tmp_path: Path, server: EncodingServer, *, discovery: bool) -> IssuerPolicy:
    source = (
        f"    issuer: {json.dumps(server.base_url)}\n    discovery: true\n"
        if discovery
        else f"    issuer: {json.dumps(CORP.iss)}\n    jwks_uri: {server.base_url}/jwks.json\n"
    )
    text = (
        "issuers:\n  corp:\n" + source + "    algorithms: [RS256]\n"
        "routes:\n  - name: api\n    match: { path_prefix: / }\n    require: {}\n"
    )
    return compile_policy_text(text, label="p.yaml", base_dir=tmp_path).issuers["corp"]


def fetch_measured(target: IssuerPolicy) -> tuple[FetchError | None, int]:
    """Fetch once; the error (if any) and the peak traced memory during the fetch."""

    async def run() -> FetchError | None:
        fetcher = HttpJwksFetcher()
        try:
            await fetcher.fetch(target)
        except FetchError as exc:
            return exc
        finally:
            await fetcher.aclose()
        return None

    tracemalloc.start()
    try:
        error = asyncio.run(run())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return error, peak


DISCOVERY_PATH = "/.well-known/openid-configuration"


@pytest.mark.parametrize("stacked", [1, 2, 3], ids=["gzip", "gzip_gzip", "gzip_x3"])
def test_a_gzip_bomb_key_set_is_refused_without_inflating(
    tmp_path: Path, server: EncodingServer, bomb: bytes, stacked: int
) -> None:
    body = bomb
    for _ in range(stacked - 1):
        body = gzip.compress(body, 9)
    assert len(body) < 256 * 1024
    server.answers["/jwks.json"] = Answer(body, ", ".join(["gzip"] * stacked))
    error, peak = fetch_measured(issuer(tmp_path, server, discovery=False))
    assert error is not None
    assert error.kind is FetchErrorKind.ENCODED
    assert str(error) == "response is gzip-encoded although identity was asked for"
    assert peak < PEAK_LIMIT, f"the fetch allocated {peak} bytes"
    assert server.asked == ["identity"]


def test_a_gzip_bomb_discovery_document_is_refused_without_inflating(
    tmp_path: Path, server: EncodingServer, bomb: bytes
) -> None:
    # 64 KiB is the discovery limit: a doubly gzipped bomb fits in it
    body = gzip.compress(bomb, 9)
    assert len(body) < 64 * 1024
    server.answers[DISCOVERY_PATH] = Answer(body, "gzip, gzip")
    error, peak = fetch_measured(issuer(tmp_path, server, discovery=True))
    assert error is not None
    assert error.kind is FetchErrorKind.ENCODED
    assert peak < PEAK_LIMIT, f"the discovery fetch allocated {peak} bytes"


@pytest.mark.parametrize("coding", ["br", "deflate", "zstd", "x-custom-coding-name-long"])
def test_any_content_coding_is_refused_unread(
    tmp_path: Path, server: EncodingServer, coding: str
) -> None:
    server.answers["/jwks.json"] = Answer(json.dumps(CORP.jwks()).encode(), coding)
    error, _ = fetch_measured(issuer(tmp_path, server, discovery=False))
    assert error is not None
    assert error.kind is FetchErrorKind.ENCODED
    assert coding[:16] in str(error) or "unknown" in str(error)


def test_an_identity_answer_is_read_as_it_is(tmp_path: Path, server: EncodingServer) -> None:
    document = {"issuer": server.base_url, "jwks_uri": f"{server.base_url}/jwks.json"}
    server.answers[DISCOVERY_PATH] = Answer(json.dumps(document).encode())
    server.answers["/jwks.json"] = Answer(json.dumps(CORP.jwks()).encode(), "identity")
    error, _ = fetch_measured(issuer(tmp_path, server, discovery=True))
    assert error is None
    assert server.asked == ["identity", "identity"]
