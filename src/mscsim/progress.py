"""Progress on stderr for long work: counts of finished chunks, and named steps of a long single run with the
seconds each took (on a terminal the running step's clock ticks, so a one-minute run never looks stuck)."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


_LINE_OPEN = [False]  # a progress line is on stderr without its newline yet (see ``say``)


def say(message: str, stream: TextIO | None = None) -> None:
    """A message on stderr on a line of its own: after an unfinished progress line, a newline first."""
    stream = stream or sys.stderr
    if _LINE_OPEN[0]:
        print(file=stream)
        _LINE_OPEN[0] = False
    print(message, file=stream, flush=True)


class Progress:
    """``count(done, total)`` for chunks; ``stage(text)`` when a step starts (the previous one is reported done
    with its time); ``close()`` ends the last step. A context manager closes itself."""

    def __init__(self, label: str = "", stream: TextIO | None = None, tick_seconds: float = 1.0):
        self.label = label
        self.stream = stream or sys.stderr
        self.tick = tick_seconds
        self._text: str | None = None
        self._t0 = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._live = bool(getattr(self.stream, "isatty", lambda: False)())

    def _write(self, text: str, end: str = "\n") -> None:
        with self._lock:
            print(text, end=end, file=self.stream, flush=True)
            _LINE_OPEN[0] = not end.endswith("\n")

    def count(self, done: int, total: int) -> None:
        self._finish_stage()
        if total <= 1:
            return
        if self._live:
            self._write(f"\r{self.label or 'patients'}: {done}/{total}", end="\n" if done >= total else "")
        elif done >= total or done % max(1, total // 20) == 0:  # a log file gets a line every 5 %
            self._write(f"{self.label or 'patients'}: {done}/{total}")

    def stage(self, text: str) -> None:
        self._finish_stage()
        self._text, self._t0 = text, time.perf_counter()
        prefix = f"{self.label}: " if self.label else ""
        if self._live:
            self._write(f"{prefix}{text} ...", end="")
            self._stop.clear()
            self._thread = threading.Thread(target=self._ticker, args=(prefix, text), daemon=True)
            self._thread.start()
        else:
            self._write(f"{prefix}{text} ...")

    def _ticker(self, prefix: str, text: str) -> None:
        while not self._stop.wait(self.tick):
            self._write(f"\r{prefix}{text} ... {time.perf_counter() - self._t0:.0f} s", end="")

    def _finish_stage(self) -> None:
        if self._text is None:
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        took = time.perf_counter() - self._t0
        prefix = f"{self.label}: " if self.label else ""
        if self._live:
            self._write(f"\r{prefix}{self._text} ... done in {took:.1f} s")
        else:
            self._write(f"{prefix}{self._text}: done in {took:.1f} s")
        self._text = None

    def close(self) -> None:
        self._finish_stage()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if exc[0] is None:
            self.close()
        else:
            self._text = None
            if self._live:
                self._write("")
