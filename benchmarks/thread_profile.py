"""Where a process's threads spend their time, for the serving benchmarks' ``--profile``
(`benchmarks/token_streaming.py`): cProfile sees one thread only, and `rnn serve`'s generation
scheduler runs in its own beside the event loop's."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any


class StackSampler:
    """Where a process's threads spend their time: every ``interval`` seconds a thread of its own
    reads every other thread's stack (`sys._current_frames`) and counts, per thread, the function
    on top (self) and every function on the stack (inclusive). cProfile sees one thread only; the
    server's generation scheduler runs in its own."""

    def __init__(self, interval: float = 0.002) -> None:
        import threading
        from collections import Counter

        self.interval, self.samples = interval, Counter()
        self.own: Counter = Counter()
        self.inclusive: Counter = Counter()
        self.cpu: dict[str, float] = {}  # CPU seconds per thread, as last read
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="stack-sampler", daemon=True)

    def start(self) -> StackSampler:
        self.thread.start()
        return self

    def stop(self) -> StackSampler:
        import threading

        self.done.set()
        self.thread.join()
        for thread in threading.enumerate():
            self._cpu(thread.ident, thread.name)
        return self

    def _cpu(self, ident: int | None, thread: str) -> None:
        """Notes the thread's CPU seconds since it started (the last value read stays once it ended)."""
        try:
            self.cpu[thread] = time.clock_gettime(time.pthread_getcpuclockid(ident))
        except (OSError, TypeError, OverflowError):
            pass

    def _run(self) -> None:
        import threading

        me = threading.get_ident()
        while not self.done.wait(self.interval):
            names = {thread.ident: thread.name for thread in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                thread = names.get(ident, str(ident))
                self._cpu(ident, thread)
                self.samples[thread] += 1
                self.own[thread, _where(frame)] += 1
                seen = set()
                while frame is not None:
                    seen.add(_where(frame))
                    frame = frame.f_back
                for where in seen:
                    self.inclusive[thread, where] += 1

    def report(self, top: int = 25) -> str:
        lines = [f"stack samples every {self.interval * 1e3:g} ms; per thread: self and inclusive share of its samples"]
        cpu = ", ".join(f"{thread} {seconds:.2f}" for thread, seconds in self.cpu.items())
        lines.append(f"CPU seconds per thread since it started (until it ended): {cpu}")
        for thread, count in self.samples.most_common():
            lines.append(f"\nthread {thread}: {count} samples")
            for title, counter in (("self", self.own), ("inclusive", self.inclusive)):
                rows = sorted(((n, w) for (t, w), n in counter.items() if t == thread), reverse=True)[:top]
                lines.append(f"  {title}:")
                lines += [f"    {100 * n / count:5.1f}%  {where}" for n, where in rows]
        return "\n".join(lines) + "\n"


def _where(frame: Any) -> str:
    code = frame.f_code
    path = Path(code.co_filename)
    return f"{code.co_name} ({path.parent.name}/{path.name}:{code.co_firstlineno})"
