"""A second process that draws figures while this one draws others.

A cached ``mscsim simulate`` of a disease spends about half its time in matplotlib (two figures, each saved as PNG,
SVG and PDF), and the figures do not depend on each other. The command line starts the helper (:func:`start`)
before it simulates, so the helper's own start-up (Python, matplotlib, mscsim's plotting) runs on another core
while this process loads the model and integrates; when the results are saved, every figure but the first is drawn
there. Without a started helper (library calls, one CPU, ``MSCSIM_FIGURE_WORKER=0``) every figure is drawn here,
the same files either way.

Spawned rather than forked: safe beside Numba's threads and the same on every platform. The standard library's
``ProcessPoolExecutor`` does the process handling; only the split of the figures is ours.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

_POOL: ProcessPoolExecutor | None = None


def start() -> bool:
    """Start the helper process (once per process); False where it is not used (one CPU, turned off, or the
    platform refused to start it)."""
    global _POOL
    if _POOL is not None:
        return True
    if (os.cpu_count() or 1) < 2 or os.environ.get("MSCSIM_FIGURE_WORKER", "1").strip() in ("0", "off", "no"):
        return False
    try:
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_warm_up)
        pool.submit(_ready)  # executors start their process at the first task: now, not when the figures are due
    except (OSError, RuntimeError, ValueError):
        return False
    _POOL = pool
    return True


def stop() -> None:
    """Let the helper exit (it is idle once the figures are saved)."""
    global _POOL
    if _POOL is not None:
        _POOL.shutdown(wait=True, cancel_futures=True)
        _POOL = None


def _warm_up() -> None:
    import gc
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it stops this process)

    import matplotlib

    matplotlib.use("Agg")
    from . import plots  # noqa: F401 - imported for its start-up cost, paid while the simulation runs

    gc.freeze()  # the imported modules live as long as the helper: its exit then skips walking them (~0.3 s)


def _ready() -> bool:
    return True


def draw_and_save(draw: Callable, ds, stem: Path) -> list[str]:
    """Draw one figure from ``ds`` and save it beside ``stem`` in every format; the file names written. The
    folder must exist: a run that was stopped has removed its unfinished output folder, and the figure must not
    bring it back."""
    import matplotlib.pyplot as plt

    from .plots import save_figure

    fig = draw(ds)
    try:
        return [p.name for p in save_figure(fig, stem, make_folder=False)]
    finally:
        plt.close(fig)


def save_figures(drawings: Mapping[str, Callable], ds, folder: Path, meanwhile: Callable[[], None] | None = None
                 ) -> list[str]:
    """Draw and save each figure (name -> drawing function of ``ds``) into ``folder``; the file names, in the
    order of ``drawings``. With the helper running, all figures but the first are drawn there; a helper that
    has died is replaced by drawing here. ``meanwhile()`` (other output to write) runs once the helper has its
    figures, before this process draws its own: the helper's figures take longest, so they start first."""
    names = list(drawings)
    sent: dict[str, Future] = {}
    if _POOL is not None and len(names) > 1:
        for name in names[1:]:
            try:
                sent[name] = _POOL.submit(draw_and_save, drawings[name], ds, folder / name)
            except (BrokenProcessPool, RuntimeError):
                break
    if meanwhile is not None:
        meanwhile()
    files = {name: draw_and_save(drawings[name], ds, folder / name) for name in names if name not in sent}
    for name, future in sent.items():
        try:
            files[name] = future.result()
        except BrokenProcessPool:
            files[name] = draw_and_save(drawings[name], ds, folder / name)
    return [f for name in names for f in files[name]]
