"""Runs onnxruntime under a time limit and turns its failures into typed errors, one line each.

Every run goes through a `RunGuard`: its own ``onnxruntime.RunOptions`` and the time its current
run started. One watchdog thread per process (started with the first guard that has a limit, gone
when no guard is left) looks at the running guards every tenth of the shortest limit (at most
every WATCH_MAX_INTERVAL) and sets ``terminate`` on the options of a run that has gone on too
long; onnxruntime then stops it between two kernels (a Loop checks the flag every iteration) and
the caller gets a `RunTimeoutError`. Marking a run costs the caller two attribute stores and a
clock read (~0.1 us), not a timer thread per run (~50 us).
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from collections.abc import Callable
from time import monotonic
from typing import Any

import onnxruntime as ort

from .errors import ArtifactError, InputValueError, RunTimeoutError

DEFAULT_RUN_TIMEOUT = 60.0  # seconds one onnxruntime run may take (runtime.load's run_timeout)
WATCH_FRACTION = 0.1  # the watchdog looks every this fraction of the shortest limit ...
WATCH_MIN_INTERVAL = 0.01  # ... but not more often than this (seconds) ...
WATCH_MAX_INTERVAL = 1.0  # ... nor less often than this
GPU_GRAPH_ID_KEY = "gpu_graph_id"  # onnxruntime's run config key of the CUDA/WebGPU graph to replay
MAX_MESSAGE = 300  # characters of onnxruntime's message kept in an ArtifactError

_STATE = ort.capi.onnxruntime_pybind11_state
# What a session run can raise: onnxruntime's own exception types (Fail, InvalidArgument, ...),
# RuntimeError (run_with_iobinding's) and MemoryError (a failed allocation).
ORT_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError,
    MemoryError,
    *(value for value in vars(_STATE).values() if isinstance(value, type) and issubclass(value, Exception)),
)


def check_run_timeout(value: Any) -> float | None:
    """``run_timeout`` as given to `runtime.load`: seconds > 0 (finite), or None for no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise InputValueError(f"run_timeout must be a number of seconds > 0, or None for no limit, got {value!r:.80}")
    return float(value)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (onnxruntime's run to several), shortened."""
    lines = str(error).strip().splitlines()
    return f"{(lines[0] if lines else type(error).__name__):.{MAX_MESSAGE}}"


class RunGuard:
    """The RunOptions of one caller at a time and when its current run started (``since``, 0.0
    between runs). A caller marks a run as::

        guard.since = monotonic()
        try:
            result = run(*args, guard.options)
        except ORT_ERRORS as error:
            result = guard.recover(error, what, run, *args)
        guard.since = 0.0
    """

    __slots__ = ("options", "since", "timeout", "__weakref__")

    def __init__(self, timeout: float | None) -> None:
        self.options = ort.RunOptions()
        self.options.log_severity_level = 4  # the error comes back as a typed exception, not a log line
        # onnxruntime's default (graph 0), set: without it run_with_iobinding looks the key up and
        # catches the "not found" exception on every run (+30 us; onnxruntime 1.32)
        self.options.add_run_config_entry(GPU_GRAPH_ID_KEY, "0")
        self.since = 0.0
        self.timeout = math.inf if timeout is None else timeout
        if timeout is not None:
            _WATCHDOG.register(self)

    def recover(self, error: BaseException, what: str, run: Callable[..., Any], *args: Any) -> Any:
        """Handles ``error`` of the run that started at ``since``: a run stopped by the watchdog
        after the limit is a RunTimeoutError; one stopped by a flag the watchdog set as the run
        before it was ending is run again (with ``run(*args, options)``; its result returned);
        any other failure is an ArtifactError naming ``what`` ran."""
        while True:
            since, self.since = self.since, 0.0
            if not self.options.terminate:
                raise ArtifactError(f"onnxruntime failed running {what}: {first_line(error)}") from None
            self.options.terminate = False
            if monotonic() - since >= self.timeout:
                raise RunTimeoutError(
                    f"onnxruntime ran {what} for more than run_timeout={self.timeout:g} s and was stopped; "
                    "a model that loops without end, or a call that needs a larger run_timeout (None: no limit)"
                ) from None
            self.since = monotonic()
            try:
                return run(*args, self.options)
            except ORT_ERRORS as again:
                error = again


class _Watchdog:
    """The thread that stops runs past their guard's limit (one per process)."""

    def __init__(self) -> None:
        self._guards: weakref.WeakSet[RunGuard] = weakref.WeakSet()
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._running = False

    def register(self, guard: RunGuard) -> None:
        with self._lock:
            self._guards.add(guard)
            if self._running:
                self._wake.set()  # look again now: the new guard may need a shorter interval
            else:
                self._start()

    def _start(self) -> None:
        self._running = True
        threading.Thread(target=self._watch, name="rnn-runtime-watchdog", daemon=True).start()

    def _watch(self) -> None:
        while True:
            interval = self._look()
            if interval is None:
                return
            self._wake.wait(max(interval, WATCH_MIN_INTERVAL))  # holding no guard: a dropped model's go with it

    def _look(self) -> float | None:
        """Stops the runs past their limit; returns when to look again (None: no guard is left,
        the thread ends and the next guard starts a new one)."""
        with self._lock:
            guards = list(self._guards)
            if not guards:
                self._running = False
                return None
            self._wake.clear()
        now = monotonic()
        interval = WATCH_MAX_INTERVAL
        for guard in guards:
            since = guard.since
            if since and now - since >= guard.timeout:
                guard.options.terminate = True
            interval = min(interval, guard.timeout * WATCH_FRACTION)
        return interval

    def after_fork(self) -> None:
        """In a forked child the thread is gone: start a new one if guards came along."""
        self._reset()
        if len(self._guards):
            self._start()


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WATCHDOG.after_fork)
