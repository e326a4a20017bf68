"""The server's logging: batched JSON lines, and the direct path for decision lines."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator

import pytest

from ext_authz import decision_log as decision_log_module
from ext_authz.decision import Allow, Decision, Deny
from ext_authz.decision_log import decision_logger, log_decision
from ext_authz.errors import DenialReason
from ext_authz.log import (
    PIPE_BUF,
    BufferedStderrHandler,
    JsonFormatter,
    configure,
    direct_json_sink,
    write_whole_lines,
)


@pytest.fixture
def server_logging() -> Iterator[BufferedStderrHandler]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure("json", "info", buffered=True)
    (handler,) = root.handlers
    assert isinstance(handler, BufferedStderrHandler)
    try:
        yield handler
    finally:
        handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_decision_lines_skip_log_records_but_look_the_same(
    server_logging: BufferedStderrHandler, capsys: pytest.CaptureFixture[str]
) -> None:
    decision_log = logging.getLogger("ext_authz.decision")
    root = logging.getLogger()
    listening = root.handlers[:]  # pytest's own capture handler listens during a test
    root.handlers[:] = [server_logging]
    try:
        assert direct_json_sink(decision_log) is server_logging
        _log_two(decision_log)
    finally:
        root.handlers[:] = listening
    # the same fields through the ordinary formatter, for comparison
    record = decision_log.makeRecord(
        decision_log.name,
        logging.INFO,
        __file__,
        1,
        "decision",
        (),
        None,
        extra={"decision_id": "id-3", "route": "orders"},
    )
    formatted = json.loads(JsonFormatter().format(record))
    server_logging.flush()
    deny, allow = lines(capsys.readouterr().err)
    assert deny["reason"] == "scope_missing" and deny["status"] == 403
    assert deny["decision_id"] == "id-1" and deny["detail"] == "x"
    assert allow["result"] == "allow" and allow["subject"] == "s"
    assert set(formatted) - {"decision_id", "route"} <= set(deny)
    assert deny["logger"] == formatted["logger"] == "ext_authz.decision"


def _log_two(decision_log: logging.Logger) -> None:
    log_decision(Deny(DenialReason.SCOPE_MISSING, "r", route="orders", detail="x"), "id-1", 0.001)
    log_decision(Allow("orders", issuer="corp", subject="s", log_subject=True), "id-2", 0.002)


def test_no_direct_path_when_anything_else_listens(
    server_logging: BufferedStderrHandler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert direct_json_sink(logging.getLogger("ext_authz.decision")) is None
    log_decision(Deny(DenialReason.NO_ROUTE, "r"), "id", 0.0)
    assert [getattr(r, "reason", None) for r in caplog.records] == ["no_route"]


def test_lines_are_written_in_batches_and_on_flush(
    server_logging: BufferedStderrHandler, capsys: pytest.CaptureFixture[str]
) -> None:
    logging.getLogger("ext_authz.test").info("hello", extra={"n": 1})
    server_logging.flush()
    (line,) = lines(capsys.readouterr().err)
    assert line["msg"] == "hello" and line["n"] == 1


def test_the_check_thread_only_queues_the_decision_and_the_writer_formats_it(
    server_logging: BufferedStderrHandler,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    listening = root.handlers[:]
    root.handlers[:] = [server_logging]
    formatted_on: list[str] = []
    original = decision_log_module.decision_line

    def recording(*args: object) -> str:
        formatted_on.append(threading.current_thread().name)
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(decision_log_module, "decision_line", recording)
    try:
        log_decision(Deny(DenialReason.NO_ROUTE, "r"), "id-q", 0.0)
        assert formatted_on == []  # nothing formatted on the calling thread
    finally:
        root.handlers[:] = listening
    flusher = threading.Thread(target=server_logging.flush, name="writer")
    flusher.start()
    flusher.join()
    assert formatted_on == ["writer"]
    (line,) = lines(capsys.readouterr().err)
    assert line["decision_id"] == "id-q" and line["reason"] == "no_route"


@pytest.mark.parametrize(
    ("mode", "logged"),
    [("all", ["allow", "dry_run", "deny"]), ("deny", ["dry_run", "deny"]), ("off", [])],
)
def test_decision_log_modes(mode: str, logged: list[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    observer = decision_logger(mode)
    decisions: list[Decision] = [
        Allow("orders", issuer="corp"),
        Allow("orders", dry_run=DenialReason.SCOPE_MISSING),
        Deny(DenialReason.TOKEN_MISSING, "r", route="orders"),
    ]
    if observer is not None:
        for n, decision in enumerate(decisions):
            observer(decision, f"id-{n}", 0.0)
    assert [getattr(r, "result", None) for r in caplog.records] == logged
    with pytest.raises(ValueError, match="decision log mode"):
        decision_logger("some")


def test_shared_stderr_gets_whole_lines_in_writes_no_larger_than_a_pipe_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_end, write_end = os.pipe()
    try:
        many = [json.dumps({"n": n, "pad": "x" * 90}) for n in range(200)]
        long = "y" * (PIPE_BUF * 2)
        writes: list[int] = []
        real_write = os.write

        def counting(fd: int, data: bytes | memoryview) -> int:
            writes.append(len(data))
            return real_write(fd, data)

        with monkeypatch.context() as patch:
            patch.setattr(os, "write", counting)
            write_whole_lines(write_end, [*many, long])
        os.close(write_end)
        received = b""
        while chunk := os.read(read_end, 65536):
            received += chunk
    finally:
        os.close(read_end)
    assert received.decode().splitlines() == [*many, long]
    assert all(size <= PIPE_BUF for size in writes[:-1]) and writes[-1] == len(long) + 1


def test_a_decision_line_is_the_json_the_formatter_would_write() -> None:
    for decision in (
        Allow("orders", issuer="corp", subject='a "quoted"\nname', log_subject=True),
        Allow("orders", notes=("x-email: dropped",)),
        Deny(DenialReason.SCOPE_MISSING, "r", route="é/ü", detail="needs \\ scope"),
        Deny(DenialReason.NO_ROUTE, "r"),
    ):
        line = decision_log_module.decision_line(decision, "id\u2028", 0.0012345, 1_800_000_000.5)
        expected = {
            "ts": "2027-01-15T08:00:00.500Z",
            "level": "info",
            "logger": "ext_authz.decision",
            "msg": "decision",
            **decision_log_module.decision_fields(decision, "id\u2028", 0.0012345),
        }
        assert json.loads(line) == expected
        assert line.isascii()


def test_a_decision_seen_again_renders_with_its_own_id_and_latency() -> None:
    allow = Allow("orders", issuer="corp", subject="s", log_subject=True)
    for n in range(3):  # the second and third lines reuse the decision's fragments
        line = json.loads(
            decision_log_module.decision_line(allow, f"id-{n}", n / 1000, 1_800_000_000.0)
        )
        assert line["decision_id"] == f"id-{n}" and line["latency_ms"] == n
        assert line["route"] == "orders" and line["subject"] == "s"
        assert line["result"] == "allow" and line["status"] == 200


def test_a_closed_writer_takes_no_more_lines(capsys: pytest.CaptureFixture[str]) -> None:
    handler = BufferedStderrHandler()
    handler.defer(str, "before")
    handler.close()  # flushes what it holds
    handler.defer(str, "after")  # logging was reconfigured: nothing is kept or written
    handler.flush()
    assert capsys.readouterr().err.splitlines() == ["before"]


def test_a_decision_line_carries_static_fields_added_after_the_first_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The static part of a line is encoded once and again only when it changes: a
    worker index set after start-up shows on the next line."""
    from ext_authz import log as log_module

    monkeypatch.setattr(log_module, "_static", {})
    allow = Allow("orders", "corp", "alice")
    first = json.loads(decision_log_module.decision_line(allow, "id-1", 0.0012345, 1.5e9))
    assert "worker" not in first
    log_module.add_static_fields(worker=3)
    second = json.loads(decision_log_module.decision_line(allow, "id-2", 0.0012345, 1.5e9))
    assert second["worker"] == 3
    assert second["decision_id"] == "id-2"
    assert second["latency_ms"] == 1.234  # rounded to the microsecond, a JSON number
    assert {k: v for k, v in second.items() if k not in ("worker", "decision_id")} == {
        k: v for k, v in first.items() if k != "decision_id"
    }
