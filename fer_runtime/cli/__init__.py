"""The command-line tools of the runtime: ``fer-predict`` (:mod:`.predict`, videos in :mod:`.video`)
and ``fer-batch`` (:mod:`.batch`). Thin layers over :mod:`fer_runtime.app`, :mod:`fer_runtime.rows`
and :func:`fer_runtime.annotate.annotate`; typer and the heavy imports are loaded only when a
command runs, so ``--help`` is quick and a missing extra is one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fer_runtime.extras import run_reporting_missing_extras


def run_app(build: Callable[[], Any]) -> None:
    """Build a typer app and run it; a missing extra (raised while building or running) is one line
    on stderr and exit code 2. Click, under typer, already turns a closed stdout (`fer-predict
    photos | head`) and Ctrl-C into a quiet exit."""
    run_reporting_missing_extras(lambda: build()())
