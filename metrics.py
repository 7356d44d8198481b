"""Prometheus metrics for authsvc: off by default, on with AUTHSVC_METRICS=true.

Off the request path's reading order, so in a module of its own: authsvc.py calls the
three recording methods of `PrometheusMetrics` (`NoMetrics` has the same, doing nothing) and
serves `exposition()` at GET /metrics. Nothing here names a person: the labels are route
names, methods, status codes and outcomes, never an email, an id or an address.

Several gunicorn workers are several processes, each with its own counters. With
PROMETHEUS_MULTIPROC_DIR set (before this module is imported: prometheus_client reads it
then), every process writes its figures into files in that directory and a scrape, answered
by any one worker, adds up the files of all of them. gunicorn.conf.py empties the directory
when the server starts and tells prometheus_client when a worker exits (docs/operations.md, "Metrics").
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any, Protocol

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
# Methods are cut to the usual seven or "other" and routes are URL_MAP's names, so the
# label sets are few; the cache of their children stops growing past this all the same.
MAX_CACHED_LABEL_SETS = 1000

# One counter per kind of audited event the issue asks for; the outcome is the audit
# line's ("ok", "failed", "throttled", "duplicate", "invalid_token", ...).
EVENTS = {
    "login": Counter(
        "authsvc_logins",
        "Login attempts by outcome (ok, failed, throttled, unverified, code_required,"
        " wrong_code, invalid_mfa_token).",
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
    "password_change": Counter(
        "authsvc_password_changes",
        "Password changes by a logged-in user by outcome (ok, wrong_password, ...).",
        ["outcome"],
        registry=_REGISTRY,
    ),
    "verification_request": Counter(
        "authsvc_verification_requests",
        "Verification codes asked for by outcome (ok, throttled, already_verified, ...).",
        ["outcome"],
        registry=_REGISTRY,
    ),
    "verification": Counter(
        "authsvc_verifications",
        "Verification codes used by outcome (ok, invalid_code, ...).",
        ["outcome"],
        registry=_REGISTRY,
    ),
    "email_change_request": Counter(
        "authsvc_email_change_requests",
        "Email changes asked for by outcome (ok, duplicate, wrong_password, ...).",
        ["outcome"],
        registry=_REGISTRY,
    ),
    "email_change": Counter(
        "authsvc_email_changes",
        "Email changes confirmed by outcome (ok, duplicate).",
        ["outcome"],
        registry=_REGISTRY,
    ),
    "account_delete": Counter(
        "authsvc_account_deletions",
        "Account deletions by outcome (ok, wrong_password, throttled).",
        ["outcome"],
        registry=_REGISTRY,
    ),
    "two_factor_enrol": Counter(
        "authsvc_two_factor_enrolments",
        "Two-factor set-ups begun by outcome (ok, wrong_password, code_required, ...).",
        ["outcome"],
        registry=_REGISTRY,
    ),
    "two_factor_on": Counter(
        "authsvc_two_factor_enablements",
        "Two-factor set-ups confirmed by outcome (ok, wrong_code, no_set_up).",
        ["outcome"],
        registry=_REGISTRY,
    ),
    "two_factor_off": Counter(
        "authsvc_two_factor_disablements",
        "Two-factor turned off by outcome (ok, wrong_password, wrong_code, ...).",
        ["outcome"],
        registry=_REGISTRY,
    ),
    "recovery_codes": Counter(
        "authsvc_recovery_code_renewals",
        "New sets of recovery codes by outcome (ok, wrong_password, wrong_code, ...).",
        ["outcome"],
        registry=_REGISTRY,
    ),
    "passkey_add": Counter(
        "authsvc_passkey_registrations",
        "Passkeys registered by outcome (ok, refused, limit).",
        ["outcome"],
        registry=_REGISTRY,
    ),
    "passkey_remove": Counter(
        "authsvc_passkey_removals",
        "Passkeys removed by outcome (ok, unknown, wrong_password, ...).",
        ["outcome"],
        registry=_REGISTRY,
    ),
    "passkey_login": Counter(
        "authsvc_passkey_logins",
        "Logins with a passkey by outcome (ok, refused, throttled, unverified).",
        ["outcome"],
        registry=_REGISTRY,
    ),
    "recovery_code": Counter(
        "authsvc_recovery_codes_used",
        "Recovery codes used in place of a two-factor code (outcome: used).",
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
# A client can send any method; a label per made-up method would grow without end.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class Probed(Protocol):
    """What a scrape asks of authsvc's `Auth`."""

    def database_answers(self) -> bool:
        """True when the database answers a trivial query within 1 s."""

    def count_live_sessions(self) -> int:
        """How many sessions are live now."""


class _ScrapeTimeFigures:
    """Figures computed when Prometheus scrapes, not counted along the way.

    The database's answer time is measured here, once per scrape, rather than around
    every query: timing each store call cost the session check about a tenth of its CPU
    under load (tests/bench.py), over the 5% this may add.
    """

    def __init__(self, auth: Probed) -> None:
        """Ask `auth` at each collection."""
        self._auth = auth

    def collect(self) -> Iterator[Metric]:
        """Database up and its answer time, then the live sessions if it answered."""
        started = time.perf_counter()
        answers = self._auth.database_answers()
        seconds = time.perf_counter() - started
        yield GaugeMetricFamily(
            "authsvc_database_up",
            "1 when the database answered a trivial query within 1 s at scrape time.",
            value=1 if answers else 0,
        )
        yield GaugeMetricFamily(
            "authsvc_database_answer_seconds",
            "Time the database took for that query (connection wait included).",
            value=seconds,
        )
        if answers:
            yield GaugeMetricFamily(
                "authsvc_live_sessions",
                "Sessions neither ended nor expired (absolute or idle), at scrape time.",
                value=self._auth.count_live_sessions(),
            )


class PrometheusMetrics:
    """Records what authsvc measures into prometheus_client's metrics."""

    def __init__(self) -> None:
        """Record into the module's metrics (in files, when multiprocess)."""
        self._multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
        # The labelled children of the request metrics, looked up once per label set:
        # `labels()` takes a lock and builds a key at every call (a third of the cost).
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            label = method if method in KNOWN_METHODS else "other"
            children = (
                REQUESTS.labels(route, label, str(status)),
                REQUEST_SECONDS.labels(route),
            )
            if len(self._children) < MAX_CACHED_LABEL_SETS:
                self._children[key] = children
        counter, histogram = children
        counter.inc()
        histogram.observe(seconds)

    def event(self, event: str, outcome: str) -> None:
        """One audited event (the audit line's event and outcome)."""
        counter = EVENTS.get(event)
        if counter is not None:
            counter.labels(outcome).inc()

    def bcrypt(self, seconds: float) -> None:
        """One bcrypt hash or check."""
        BCRYPT_SECONDS.observe(seconds)

    def exposition(self, auth: Probed) -> tuple[bytes, str]:
        """The text a scrape gets, and its content type.

        Multiprocess: a fresh registry that reads every process's files (the docs'
        recipe: the metrics' own registry would hold this process's figures only).
        """
        if self._multiprocess_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = _REGISTRY
        scrape_time = CollectorRegistry()
        scrape_time.register(_ScrapeTimeFigures(auth))
        return generate_latest(registry) + generate_latest(scrape_time), (
            CONTENT_TYPE_LATEST
        )


def worker_exited(pid: int) -> None:
    """gunicorn's `child_exit` hook (with a multiprocess directory): tell
    prometheus_client the worker `pid` is gone.

    Its counters stay (they still count); only its live-gauge files are removed. authsvc
    has no such gauge (live sessions are computed at scrape), so this is the hygiene the
    prometheus_client docs ask for, kept so a future gauge cannot go wrong.
    """
    multiprocess.mark_process_dead(pid)
