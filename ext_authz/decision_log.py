"""The decision log: one structured line per decision, shared by both front doors.

On the server the line is built where it costs the check nothing it waits for: the
check thread hands the (immutable) decision, its id, latency and time to the buffered
writer, which formats the JSON on its own thread. `--decision-log deny` keeps the
denials (and dry-run would-be denials) only; `off` writes none, for deployments whose
Envoy access log carries the decision from the dynamic metadata instead.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _escape
from typing import Any

from ext_authz.decision import Allow, Decision, outcome
from ext_authz.denial import http_status
from ext_authz.log import direct_json_sink, static_fields, timestamp

decision_log = logging.getLogger("ext_authz.decision")

DecisionObserver = Callable[[Decision, str, float], None]
DECISION_LOG_MODES = ("all", "deny", "off")

MAX_REQUEST_ID = 128
# RFC 9110 token characters: a client's id is logged as the decision id only when it
# is short and plain; anything else (long, spaces, quotes, control bytes) is replaced.
_REQUEST_ID = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1," + str(MAX_REQUEST_ID) + "}")


def decision_id(request_id: str | None) -> str:
    """The id a decision is logged under: the request's `x-request-id` when it is a
    short token, else a fresh random one."""
    if request_id is not None and _REQUEST_ID.fullmatch(request_id):
        return request_id
    return os.urandom(16).hex()  # 128 random bits, as a UUID's hex, at a fifth of its cost


def decision_fields(decision: Decision, decision_id: str, seconds: float) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "decision_id": decision_id,
        "route": decision.route,
        "issuer": decision.issuer,
        "latency_ms": round(seconds * 1000, 3),
    }
    if decision.log_subject and decision.subject is not None:
        fields["subject"] = decision.subject
    result, why = outcome(decision)
    fields["result"] = result
    fields["status"] = 200 if isinstance(decision, Allow) else http_status(decision)
    if why is not None:
        fields["reason"] = why.value
    if isinstance(decision, Allow):
        if decision.notes:
            fields["header_notes"] = list(decision.notes)
    elif decision.detail:
        fields["detail"] = decision.detail
    return fields


_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))
_HEAD = f',"level":"info","logger":{_ENCODER.encode(decision_log.name)},"msg":"decision"'


def _encoded(fields: dict[str, Any]) -> str:
    parts = []
    for name, value in fields.items():
        if value.__class__ is str:
            parts.append(f",{_escape(name)}:{_escape(value)}")
        elif value is None:
            parts.append(f",{_escape(name)}:null")
        else:
            parts.append(f",{_escape(name)}:{_ENCODER.encode(value)}")
    return "".join(parts)


# The parts of a line that depend on the decision alone, by decision object: a memo
# hit hands over the same object every time. Only the writer thread formats lines;
# the entry keeps its decision alive, so an id is never reused while cached.
_FRAGMENTS: dict[int, tuple[Decision, str, str]] = {}
_FRAGMENTS_MAX = 4096


def _fragments(decision: Decision) -> tuple[str, str]:
    """The encoded fields before `latency_ms` (route, issuer) and after it."""
    cached = _FRAGMENTS.get(id(decision))
    if cached is not None and cached[0] is decision:
        return cached[1], cached[2]
    fields = decision_fields(decision, "", 0.0)
    del fields["decision_id"]
    before = _encoded({"route": fields.pop("route"), "issuer": fields.pop("issuer")})
    del fields["latency_ms"]
    after = _encoded(fields)
    if len(_FRAGMENTS) >= _FRAGMENTS_MAX:
        _FRAGMENTS.clear()
    _FRAGMENTS[id(decision)] = (decision, before, after)
    return before, after


_STATIC: list[Any] = [None, ""]  # the static fields last encoded (a copy), and their text


def _static_part() -> str:
    """The process's static fields (`worker`, ...), encoded again only when they change."""
    fields = static_fields()
    if fields != _STATIC[0]:
        _STATIC[:] = [dict(fields), _encoded(fields)]
    return str(_STATIC[1])


def decision_line(decision: Decision, decision_id: str, seconds: float, now: float) -> str:
    """The JSON line the formatter would write for this decision, built directly: the
    fixed part once, the decision's own part once per decision object, strings through
    json's own escaping. Call it from one thread (the log writer)."""
    before, after = _fragments(decision)
    # a finite float's repr is its JSON text (what `json` itself writes)
    latency = repr(round(seconds * 1000, 3))
    return (
        f'{{"ts":"{timestamp(now)}"{_HEAD}{_static_part()}'
        f',"decision_id":{_escape(decision_id)}{before},"latency_ms":{latency}{after}}}'
    )


def log_decision(decision: Decision, decision_id: str, seconds: float) -> None:
    sink = direct_json_sink(decision_log)
    if sink is not None:
        sink.defer(decision_line, decision, decision_id, seconds, time.time())
        return
    if decision_log.isEnabledFor(logging.INFO):
        decision_log.info("decision", extra=decision_fields(decision, decision_id, seconds))


def log_denial(decision: Decision, decision_id: str, seconds: float) -> None:
    """`log_decision` for denials and dry-run would-be denials only."""
    if isinstance(decision, Allow) and decision.dry_run is None:
        return
    log_decision(decision, decision_id, seconds)


def decision_logger(mode: str) -> DecisionObserver | None:
    """The observer for `--decision-log all|deny|off` (None: no line at all)."""
    if mode == "all":
        return log_decision
    if mode == "deny":
        return log_denial
    if mode == "off":
        return None
    raise ValueError(f"decision log mode must be one of {', '.join(DECISION_LOG_MODES)}")
