"""Prometheus metrics for authsvc: off by default, on with AUTHSVC_METRICS=true.

Off the request path's reading order, so in a module of its own: authsvc.py calls the four
methods of `PrometheusMetrics` (the same ones its `NoMetrics` has, doing nothing) and
serves `exposition()` at GET /metrics. Nothing here names a person: the labels are route
names, methods, status codes and outcomes, never an email, an id or an address.

Several gunicorn workers are several processes, each with its own counters. With
PROMETHEUS_MULTIPROC_DIR set (before this module is imported: prometheus_client reads it
then), every process writes its figures into files in that directory and a scrape, answered
by any one worker, adds up the files of all of them. gunicorn.conf.py empties the directory
when the server starts and tells prometheus_client when a worker exits (README, "Metrics").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric

# No `_created` series (a start time per label set): they double the text and say
# nothing a graph needs; multiprocess mode has none either.
disable_created_metrics()

# The process's own figures, when there is no multiprocess directory (one process: the
# development server, or a single gunicorn worker).
_REGISTRY = CollectorRegistry()

REQUESTS = Counter(
    "authsvc_http_requests",
    "HTTP requests answered, by route (the URL map's rule name), method and status.",
    ["route", "method", "status"],
    registry=_REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "authsvc_http_request_duration_seconds",
    "Time from the request's arrival in the app to its response, by route.",
    ["route"],
    registry=_REGISTRY,
)
# One counter per kind of audited event the issue asks for; the outcome is the audit
# line's ("ok", "failed", "throttled", "duplicate", "invalid_token", ...).
EVENTS = {
    "login": Counter(
        "authsvc_logins",
        "Login attempts by outcome (ok, failed, throttled).",
        ["outcome"],
        registry=_REGISTRY,
    ),
    "register": Counter(
        "authsvc_registrations",
        "Registrations by outcome (ok, duplicate).",
        ["outcome"],
        registry=_REGISTRY,
    ),
    "reset_request": Counter(
        "authsvc_reset_requests",
        "Reset-token requests by outcome (ok, mailed, unknown_email, mail_failed).",
        ["outcome"],
        registry=_REGISTRY,
    ),
    "password_update": Counter(
        "authsvc_password_updates",
        "Password updates with a reset token by outcome (ok, invalid_token).",
        ["outcome"],
        registry=_REGISTRY,
    ),
}
# bcrypt at cost 12 takes about 0.2-0.3 s on this machine: buckets around that.
BCRYPT_SECONDS = Histogram(
    "authsvc_bcrypt_duration_seconds",
    "Time of one bcrypt hash or check.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0),
    registry=_REGISTRY,
)
# A store call: waiting for a connection (PostgreSQL's pool) plus the statements.
DATABASE_SECONDS = Histogram(
    "authsvc_database_duration_seconds",
    "Time of one store call on the database (connection wait and statements).",
    buckets=(
        0.0001,
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.5,
        1.0,
        5.0,
    ),
    registry=_REGISTRY,
)


# A client can send any method; a label per made-up method would grow without end.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class _ScrapeTimeFigures:
    """A collector computed when Prometheus scrapes, not counted along the way."""

    def __init__(self, live_sessions: Callable[[], int]) -> None:
        """`live_sessions` counts the live sessions of every user (one index range)."""
        self._live_sessions = live_sessions

    def collect(self) -> Iterator[Metric]:
        """The live-sessions gauge: the database's answer, so every worker agrees."""
        yield GaugeMetricFamily(
            "authsvc_live_sessions",
            "Sessions neither ended nor expired (absolute or idle), at scrape time.",
            value=self._live_sessions(),
        )


class PrometheusMetrics:
    """Records what authsvc measures into prometheus_client's metrics."""

    def __init__(self) -> None:
        """Record into the module's metrics (in files, when multiprocess)."""
        self._multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request."""
        method = method if method in KNOWN_METHODS else "other"
        REQUESTS.labels(route, method, str(status)).inc()
        REQUEST_SECONDS.labels(route).observe(seconds)

    def event(self, event: str, outcome: str) -> None:
        """One audited event (the audit line's event and outcome)."""
        counter = EVENTS.get(event)
        if counter is not None:
            counter.labels(outcome).inc()

    def bcrypt(self, seconds: float) -> None:
        """One bcrypt hash or check."""
        BCRYPT_SECONDS.observe(seconds)

    def database(self, seconds: float) -> None:
        """One store call's time on the database."""
        DATABASE_SECONDS.observe(seconds)

    def exposition(self, live_sessions: Callable[[], int]) -> tuple[bytes, str]:
        """The text a scrape gets, and its content type.

        `live_sessions` is called now, for the gauge (Auth.count_live_sessions).

        Multiprocess: a fresh registry that reads every process's files (the docs'
        recipe: the metrics' own registry would hold this process's figures only).
        """
        if self._multiprocess_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = _REGISTRY
        scrape_time = CollectorRegistry()
        scrape_time.register(_ScrapeTimeFigures(live_sessions))
        return generate_latest(registry) + generate_latest(scrape_time), (
            CONTENT_TYPE_LATEST
        )


def worker_exited(pid: int) -> None:
    """gunicorn's `child_exit` hook: tell prometheus_client the worker `pid` is gone.

    Its counters stay (they still count); only its live-gauge files are removed. authsvc
    has no such gauge (live sessions are computed at scrape), so this is the hygiene the
    prometheus_client docs ask for, kept so a future gauge cannot go wrong.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
