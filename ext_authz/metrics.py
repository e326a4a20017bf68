"""Prometheus metrics, on their own registry and their own HTTP listener.

Labels are bounded sets only: route names (from the policy), results, the closed set
of denial reasons, issuer names and key states. Never a subject, token, path or
header value.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ext_authz import __version__
from ext_authz.decision import Decision, outcome
from ext_authz.keys.store import IssuerKeys, KeyStatus
from ext_authz.memo import AnswerMemo
from ext_authz.tokens.cache import VerifiedTokenCache

_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
NO_ROUTE = "(none)"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "ext_authz_decisions",
            "Decisions by route, result (allow, deny, dry_run) and denial reason.",
            ["route", "result", "reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "ext_authz_check_duration_seconds",
            "Time to decide one check, in the server.",
            ["result"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.reloads = Counter(
            "ext_authz_policy_reloads",
            "Policy reloads by result (ok, error).",
            ["result"],
            registry=self.registry,
        )
        self.key_fetches = Counter(
            "ext_authz_key_fetches",
            "Key set fetches by issuer and result.",
            ["issuer", "result"],
            registry=self.registry,
        )
        build = Gauge(
            "ext_authz_build_info",
            "Build information.",
            ["version", "python"],
            registry=self.registry,
            multiprocess_mode="max",  # under a supervisor: one series, not one per process
        )
        build.labels(__version__, platform.python_version()).set(1)
        self._children: dict[tuple[str, str, str], Any] = {}
        self._runtime: _RuntimeCollector | None = None
        self._timers: dict[str, Any] = {}

    def observe_decision(self, decision: Decision, seconds: float) -> None:
        result, why = outcome(decision)
        key = (decision.route or NO_ROUTE, result, why.value if why is not None else "")
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, self.decisions.labels(*key))
        child.inc()
        timer = self._timers.get(result)
        if timer is None:
            timer = self._timers.setdefault(result, self.duration.labels(result))
        timer.observe(seconds)

    def observe_reload(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "error").inc()

    def observe_key_fetch(self, issuer: str, result: str) -> None:
        self.key_fetches.labels(issuer, result).inc()

    def watch_runtime(
        self,
        statuses: Callable[[], Mapping[str, IssuerKeys]],
        cache: VerifiedTokenCache | None,
        clock: Callable[[], float] = time.time,
        memos: Mapping[str, AnswerMemo[Any]] | None = None,
    ) -> None:
        """Report key state, the token cache and the answer memos (by door: `grpc`,
        `http`) at scrape time."""
        self._runtime = _RuntimeCollector(statuses, cache, clock, memos or {})
        self.registry.register(self._runtime)

    def publish_runtime(self, interval: float = 1.0) -> None:
        """Under a supervisor, whose endpoint reads only what workers write to the
        multiprocess directory: copy the scrape-time figures there every `interval`
        seconds (gauges: the highest of the live workers; counters: added up)."""
        collector = self._runtime
        if collector is None:
            return
        gauges: dict[str, Gauge] = {}
        counters: dict[str, Counter] = {}
        sent: dict[tuple[str, tuple[str, ...]], float] = {}

        def publish() -> None:
            for family in collector.collect():
                for sample in family.samples:
                    names = tuple(sample.labels)
                    values = tuple(sample.labels.values())
                    if family.type == "gauge":
                        gauge = gauges.get(family.name)
                        if gauge is None:
                            gauge = gauges[family.name] = Gauge(
                                family.name,
                                family.documentation,
                                names,
                                registry=None,
                                multiprocess_mode="livemax",
                            )
                        (gauge.labels(*values) if names else gauge).set(sample.value)
                    elif sample.name.endswith("_total"):
                        counter = counters.get(family.name)
                        if counter is None:
                            counter = counters[family.name] = Counter(
                                family.name, family.documentation, names, registry=None
                            )
                        key = (family.name, values)
                        delta = sample.value - sent.get(key, 0.0)
                        if delta > 0:
                            (counter.labels(*values) if names else counter).inc(delta)
                            sent[key] = sample.value

        def loop() -> None:
            while True:
                try:
                    publish()
                except Exception:  # a scrape-time figure must never stop the worker
                    logging.getLogger("ext_authz.metrics").exception("publishing failed")
                time.sleep(interval)

        threading.Thread(target=loop, name="ext-authz-metrics", daemon=True).start()


class _RuntimeCollector(Collector):
    def __init__(
        self,
        statuses: Callable[[], Mapping[str, IssuerKeys]],
        cache: VerifiedTokenCache | None,
        clock: Callable[[], float],
        memos: Mapping[str, AnswerMemo[Any]],
    ) -> None:
        self._statuses = statuses
        self._cache = cache
        self._clock = clock
        self._memos = dict(memos)

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        held = GaugeMetricFamily("ext_authz_keys", "Keys held per issuer.", labels=["issuer"])
        age = GaugeMetricFamily(
            "ext_authz_keys_age_seconds",
            "Seconds since the issuer's last good key fetch.",
            labels=["issuer"],
        )
        state = GaugeMetricFamily(
            "ext_authz_keys_state",
            "1 for the issuer's current key state (static, pending, fresh, stale, failed).",
            labels=["issuer", "state"],
        )
        now = self._clock()
        for issuer, snapshot in sorted(self._statuses().items()):
            held.add_metric([issuer], len(snapshot.key_set) if snapshot.key_set else 0)
            if snapshot.fetched_at is not None:
                age.add_metric([issuer], max(0.0, now - snapshot.fetched_at))
            for status in KeyStatus:
                state.add_metric([issuer, status.value], 1 if snapshot.status is status else 0)
        yield held
        yield age
        yield state
        if self._cache is not None:
            yield CounterMetricFamily(
                "ext_authz_token_cache_hits",
                "Checks served from the verified-token cache.",
                value=self._cache.hits,
            )
            yield CounterMetricFamily(
                "ext_authz_token_cache_misses",
                "Checks that verified their token.",
                value=self._cache.misses,
            )
        if self._memos:
            hits = CounterMetricFamily(
                "ext_authz_answer_memo_hits",
                "Checks answered from the memo of finished allow answers, by door.",
                labels=["door"],
            )
            misses = CounterMetricFamily(
                "ext_authz_answer_memo_misses",
                "Checks with a token on a `require` route that the memo could not answer, by door.",
                labels=["door"],
            )
            for door, memo in sorted(self._memos.items()):
                hits.add_metric([door], memo.hits)
                misses.add_metric([door], memo.misses)
            yield hits
            yield misses


def serve_metrics(metrics: Metrics, listen: str) -> Any:
    """Serve `/metrics` on `HOST:PORT` in a daemon thread; returns the HTTP server."""
    host, _, port = listen.rpartition(":")
    address = host.strip("[]") or "0.0.0.0"  # noqa: S104  (an explicit operator choice)
    server, _thread = start_http_server(int(port), addr=address, registry=metrics.registry)
    return server
