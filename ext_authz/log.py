"""Structured logging: one JSON object per line (or plain text for humans).

Fields come from `extra=`; nothing here formats tokens, keys or claim values,
and call sites never pass them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from typing import Any

_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


_PLAIN = re.compile(r"[^\s\"\\=\x00-\x1f\x7f]+")


def _text(value: Any) -> str:
    """A value as `key=value` text: quoted (JSON string escapes) unless plain, so no
    value can end its field or forge another (`x result=allow`)."""
    text = str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={_text(v)}" for k, v in _extras(record).items() if v is not None)
        line = f"{record.levelname.lower():7} {record.name}: {record.getMessage()}"
        if extras:
            line += f" {extras}"
        if record.exc_info and record.exc_info[0] is not None:
            line += "\n" + self.formatException(record.exc_info)
        return line


class BufferedStderrHandler(logging.Handler):
    """Formats outside any lock and writes lines in batches: a check thread appends
    one string, and a background thread writes what has gathered every `interval`
    seconds (or sooner, past `batch` lines). Pending lines are written on flush and at
    exit (logging's own shutdown flushes every handler)."""

    def __init__(self, interval: float = 0.2, batch: int = 512) -> None:
        super().__init__()
        self._pending: list[str] = []
        self._guard = threading.Lock()
        self._batch = batch
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, args=(interval,), name="ext-authz-log", daemon=True
        )
        self._thread.start()

    def handle(self, record: logging.LogRecord) -> bool:
        if not self.filter(record):
            return False
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return False
        with self._guard:
            self._pending.append(line)
            full = len(self._pending) >= self._batch
        if full:
            self._wake.set()
        return True

    def emit(self, record: logging.LogRecord) -> None:  # handle() does the work
        self.handle(record)

    def write_line(self, line: str) -> None:
        """Queue a line that is already formatted."""
        with self._guard:
            self._pending.append(line)
            full = len(self._pending) >= self._batch
        if full:
            self._wake.set()

    def flush(self) -> None:
        with self._guard:
            lines, self._pending = self._pending, []
        if lines:
            try:
                sys.stderr.write("\n".join(lines) + "\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self.flush()
        super().close()

    def _run(self, interval: float) -> None:
        while not self._closed:
            self._wake.wait(interval)
            self._wake.clear()
            self.flush()


_direct: BufferedStderrHandler | None = None


def direct_json_sink(logger: logging.Logger) -> BufferedStderrHandler | None:
    """The buffered JSON handler when it is the only place `logger`'s INFO lines go, so
    a hot path may hand it a ready JSON line instead of building a `LogRecord` (which
    walks the stack to find its caller). None whenever anything else listens (tests)."""
    sink = _direct
    if sink is None or logger.handlers or logging.getLogger().handlers != [sink]:
        return None
    return sink if logger.isEnabledFor(logging.INFO) else None


def timestamp(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def configure(fmt: str = "json", level: str = "info", buffered: bool = False) -> None:
    """Log to stderr. `buffered` batches writes (the server: one decision line per
    check); commands that print a few lines write them at once."""
    handler: logging.Handler = (
        BufferedStderrHandler() if buffered else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    global _direct
    _direct = handler if isinstance(handler, BufferedStderrHandler) and fmt == "json" else None
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
