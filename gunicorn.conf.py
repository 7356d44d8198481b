"""gunicorn's settings file: read from the working directory (or `gunicorn -c`).

The two hooks prometheus_client's multiprocess mode needs (docs/operations.md, "Metrics"),
which do nothing unless AUTHSVC_METRICS=true and PROMETHEUS_MULTIPROC_DIR are set, and
one for the garbage collector in each worker (`post_worker_init`). The server's own settings
(bind, workers, threads) stay on the command line, where the README shows them.
"""

from __future__ import annotations

import gc
import glob
import os
from typing import Any


def _metrics_dir() -> str:
    """The multiprocess directory when metrics are on, else "": authsvc's own reading
    of AUTHSVC_METRICS and PROMETHEUS_MULTIPROC_DIR (Config.metrics_dir). A bad setting
    is left for the app to report when it loads, naming the variable."""
    from config import Config, ConfigError

    try:
        return Config.from_env(os.environ).metrics_dir
    except ConfigError:
        return ""


def on_starting(server: Any) -> None:
    """Before the first worker: remove the figures an earlier run left in the directory.

    Counters are files per process; left over, a dead run's counts would add to this
    run's (the prometheus_client docs: wipe the directory between runs).
    """
    directory = _metrics_dir()
    if directory and os.path.isdir(directory):
        for kind in ("counter", "gauge", "histogram", "summary"):
            for path in glob.glob(os.path.join(directory, f"{kind}_*.db")):
                os.remove(path)


def child_exit(server: Any, worker: Any) -> None:
    """A worker has exited: let prometheus_client drop its live-gauge files."""
    if _metrics_dir():
        import metrics

        metrics.worker_exited(worker.pid)


def post_worker_init(worker: Any) -> None:
    """In each worker, once it has loaded the app: move every object that exists now
    (the modules, the app, its templates, its connections) out of the garbage
    collector's sight, `gc.freeze()`. A collection, which the allocations of requests
    set off, then walks only the objects made since, never these thousands (Python's
    docs suggest freezing in pre-forking servers)."""
    gc.freeze()
