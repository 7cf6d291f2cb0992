"""A virtual trial on a Dask cluster gives the local run's per-patient results bit for bit.

A local cluster of two worker processes (each given the arms' compiled models by the client) runs the chunks of the
small shared design (conftest.small_design); nothing is mocked."""

from __future__ import annotations

import logging

import pytest

distributed = pytest.importorskip("dask.distributed")

from conftest import assert_same_trial_results  # noqa: E402
from mscsim.cli import main  # noqa: E402
from mscsim.trials.trial import RESULT_FILES, chunk_store  # noqa: E402


def _chunks_computed_here() -> int:
    """Chunks a process has computed for the trial runner (0 if it never ran one)."""
    import sys

    runner = sys.modules.get("mscsim.trials.runner")
    return runner.chunks_computed() if runner is not None else 0


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=logging.ERROR) as cluster:
        yield cluster


def test_dask_cluster_gives_the_local_result_bit_for_bit(cluster, trial_reference, tmp_path):
    out = tmp_path / "dask"
    assert main(["trial", str(trial_reference.design), "--out", str(out), "--scheduler", cluster.scheduler_address,
                 "--chunk-size", str(trial_reference.chunk_size)]) == 0
    assert_same_trial_results(out, trial_reference.out)
    assert all((out / name).is_file() for name in RESULT_FILES) and not chunk_store(out).exists()
    with distributed.Client(cluster) as client:  # the chunks ran in the cluster's worker processes
        computed = client.run(_chunks_computed_here)
    assert len(computed) == 2 and sum(computed.values()) == 4  # the 4 chunks, wherever each landed
