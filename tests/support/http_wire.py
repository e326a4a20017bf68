"""Raw HTTP/1.1 on a socket: for what a polite client library will not send
(malformed heads, pipelining, slow heads) and for reading exact answers."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import httptools


@dataclass
class WireResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class _Collector:
    def __init__(self) -> None:
        self.responses: list[WireResponse] = []
        self._headers: dict[str, str] = {}
        self._body = b""
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self._headers = {}
        self._body = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        self.responses.append(WireResponse(status, self._headers, self._body))


class Wire:
    """One TCP connection to HOST:PORT."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.collector = _Collector()
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(
        self, count: int = 1, timeout: float = 5.0, head_only: bool = False
    ) -> list[WireResponse]:
        """Read until `count` responses arrived (or the peer closed)."""
        deadline = time.monotonic() + timeout
        if head_only:
            return [self._read_head(deadline)]
        while len(self.collector.responses) < count and not self.closed:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                self.closed = True
                break
            self.collector.parser.feed_data(chunk)
        got = self.collector.responses[:count]
        del self.collector.responses[:count]
        return got

    def _read_head(self, deadline: float) -> WireResponse:
        data = b""
        while b"\r\n\r\n" not in data:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return WireResponse(status, headers, rest)

    def peer_closed(self, timeout: float = 3.0) -> bool:
        """True when the server closes the connection within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def request(
    method: str, target: str, headers: dict[str, str] | None = None, host: str = "app.test"
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
