"""The figure helper process: the same files as drawing in-process, and a dead helper replaced by drawing here."""

from __future__ import annotations

import os
from functools import partial

import pytest

from mscsim import load
from mscsim.report import figure_worker
from mscsim.report.plots import cell_fate_figure, tissue_response_figure

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the helper is used only with two CPUs or more")


@pytest.fixture(scope="module")
def knee():
    return load("knee_oa_ia_5e7").run().data


def _drawings():
    return {"cell_fate": partial(cell_fate_figure, bands=None), "tissue_response": partial(tissue_response_figure,
                                                                                         bands=None)}


def test_the_helper_draws_the_same_figures_as_this_process(knee, tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    figure_worker.stop()
    local = figure_worker.save_figures(_drawings(), knee, here)
    assert figure_worker.start()
    try:
        remote = figure_worker.save_figures(_drawings(), knee, there)
    finally:
        figure_worker.stop()
    assert local == remote == [f"{n}.{f}" for n in ("cell_fate", "tissue_response") for f in ("png", "svg", "pdf")]
    for name in ("cell_fate.png", "tissue_response.png"):  # the vector formats carry their creation time
        assert (here / name).read_bytes() == (there / name).read_bytes(), name


def test_a_helper_that_died_is_replaced_by_drawing_here(knee, tmp_path):
    assert figure_worker.start()
    try:
        figure_worker._POOL.submit(os._exit, 1)  # the helper process dies; its pool is broken
        files = figure_worker.save_figures(_drawings(), knee, tmp_path)
    finally:
        figure_worker.stop()
    assert "tissue_response.png" in files and (tmp_path / "tissue_response.png").stat().st_size > 0


def test_turned_off_by_the_environment(monkeypatch):
    figure_worker.stop()
    monkeypatch.setenv("MSCSIM_FIGURE_WORKER", "0")
    assert not figure_worker.start()
    assert figure_worker._POOL is None
