"""What a recipe run shares across its phases: one clock, one phase log, one lock on its output folder, one heartbeat.

- `Clock`: seconds since the start and to the budget; `limit(until_s)` raises `PhaseTimeout` inside a phase that
  runs past its deadline (SIGALRM in the main thread; elsewhere phases only check the clock between steps). The
  alarm waits for an import in progress to end (a half-imported module breaks every later use), and `shield()`
  holds it back while a submission is written, so a file is never cut in half;
- `PhaseLog`: one JSON line per event in a `.jsonl` file and one printed line each; a log that cannot be written
  never stops the run;
- `hold_output_dir`: an exclusive lock on the output folder for the run's lifetime (released by the kernel even
  when the process is killed), so a second run on the same folder is refused at once, naming the first;
- `Heartbeat`: a line every few minutes from a background thread while a phase works (step, loss, time left).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

LOCK_NAME = ".trm_run.lock"


class PhaseTimeout(BaseException):
    """A phase ran into its deadline (raised inside it by the clock's alarm). A BaseException, as
    KeyboardInterrupt is, so that library code catching Exception (a retry, a cleanup) cannot swallow it."""


class OutputBusyError(ValueError):
    """Another run holds the output folder."""


class Clock:
    """The run's one clock: `budget_s` from construction; use as a context manager to own SIGALRM."""

    def __init__(self, budget_s: float) -> None:
        self.t0, self.budget_s = time.monotonic(), budget_s
        self._limits: list[float] = []  # deadlines in seconds since t0, innermost last (never later than outer)
        self._previous: Any = None
        self._alarm = False

    def __enter__(self) -> "Clock":
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
            self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
            self._alarm = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)
            self._alarm = False

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self, until_s: float | None = None) -> float:
        """Seconds from now to `until_s` (seconds since the start; default: the budget)."""
        return (self.budget_s if until_s is None else until_s) - self.elapsed()

    @contextlib.contextmanager
    def limit(self, until_s: float) -> Iterator[None]:
        """Raise `PhaseTimeout` inside the block once the clock passes `until_s` (or an enclosing, earlier limit)."""
        self._limits.append(min([until_s, *self._limits]))
        try:
            if self.left(self._limits[-1]) <= 0:
                raise PhaseTimeout(f"no time left (deadline {self._limits[-1]:.1f} s into the run)")
            self._arm()
            yield
        finally:
            self._limits.pop()
            self._arm()

    @contextlib.contextmanager
    def shield(self) -> Iterator[None]:
        """Hold the alarm back inside the block (it fires right after, if due)."""
        if not self._alarm:
            yield
            return
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})

    def _arm(self) -> None:
        if self._alarm:
            seconds = max(1e-3, self.left(self._limits[-1])) if self._limits else 0
            signal.setitimer(signal.ITIMER_REAL, seconds)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if _importing(frame):  # a module cut half-imported would break every later use of it: let it finish
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            return
        if self._limits and self.left(self._limits[-1]) <= 1e-3:
            raise PhaseTimeout(f"ran past its deadline ({self._limits[-1]:.1f} s into the run)")
        self._arm()  # early (timer granularity) or the limit was left meanwhile


def _importing(frame: Any) -> bool:
    """Whether the interrupted code is inside an import (a frame of importlib's bootstrap)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


class PhaseLog:
    """Phase timing: one JSON line per event in `path`, one printed line each.

    A log that cannot be written (a folder in its place, a read-only or full disk) never stops the run: the
    first failure is printed once, naming the file and the reason, and the run goes on with printed lines only."""

    def __init__(self, path: Path, clock: Clock, prefix: str = "kaggle", **tags: Any) -> None:
        self.path, self.clock, self.prefix, self.tags = path, clock, prefix, tags
        self.phases: dict[str, float] = {}
        self.broken: str | None = None  # why the file cannot be written, once it failed

    def _write(self, record: dict) -> None:
        if self.broken is not None:
            return
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            from trm_core.utils import _why_not_writable

            self.broken = "a folder has that name" if self.path.is_dir() else _why_not_writable(self.path.parent, e)
            print(f"[{self.prefix}] cannot write {self.path}: {self.broken}; logging to the console only", flush=True)

    def event(self, phase: str, event: str, echo: bool = True, **data: Any) -> None:
        with self.clock.shield():
            record = {"time": round(time.time(), 3), "elapsed_s": round(self.clock.elapsed(), 3), **self.tags,
                      "phase": phase, "event": event, **data}
            self._write(record)
            if echo:
                extra = " ".join(f"{k}={v}" for k, v in data.items() if k != "traceback")
                print(f"[{self.prefix} {record['elapsed_s']:8.1f}s] {phase} {event} {extra}".rstrip(), flush=True)

    def add_time(self, phase: str, seconds: float) -> None:
        self.phases[phase] = round(self.phases.get(phase, 0.0) + seconds, 3)


@contextlib.contextmanager
def hold_output_dir(folder: Path, what: str = "run") -> Iterator[None]:
    """Lock `folder` for this run (flock on `.trm_run.lock`, released when the process ends, however it ends);
    raise `OutputBusyError` at once, naming the holder, when another run holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (Kaggle and Linux always have one)
        yield
        return
    f = open(folder / LOCK_NAME, "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise OutputBusyError(f"{folder}: another {what} holds this output folder ({holder}); wait for it to "
                                  "end, or give this run another output folder") from None
        f.seek(0)
        f.truncate()
        f.write(f"{what} pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        yield
    finally:
        f.close()  # closing the file releases the lock


class Heartbeat:
    """Print `line()` every `every_s` seconds from a daemon thread until stopped (None skips a beat)."""

    def __init__(self, every_s: float, line: Callable[[], str | None]) -> None:
        self.every_s, self.line = every_s, line
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        if self.every_s > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                text = self.line()
            except Exception as e:  # noqa: BLE001 - a heartbeat must never take the run down
                text = f"(heartbeat: {type(e).__name__}: {e})"
            if text:
                print(text, flush=True)
