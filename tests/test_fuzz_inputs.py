"""Hostile input, nothing lost (issue 19): generated scenarios, trial designs, lot records and FCS files, each run
through the command line as a user runs it (tests/fuzzing.py builds and judges the cases).

Every case ends in exit status 2 with a one-line message naming the input file, or in a valid run whose outputs hold
up (no negative cell state, finite endpoints, strict JSON, no lot released on a corrupt FCS file); never a traceback,
never a hang. The examples are few and seeded (``derandomize``), so the suite stays fast and repeatable;
``scripts/fuzz_inputs.py`` runs thousands per family."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from fuzzing import FAMILIES, run_case

EXAMPLES_PER_FAMILY = {"scenario": 25, "design": 12, "lot": 15, "fcs": 25}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _settings(family: str):
    return settings(max_examples=EXAMPLES_PER_FAMILY[family], derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@_settings("scenario")
@given(case=FAMILIES["scenario"]())
def test_fuzzed_scenarios_exit_2_or_run_cleanly(root, case):
    run_case(case, root / "case")


@_settings("design")
@given(case=FAMILIES["design"]())
def test_fuzzed_designs_exit_2_or_run_cleanly(root, case):
    run_case(case, root / "case")


@_settings("lot")
@given(case=FAMILIES["lot"]())
def test_fuzzed_lot_records_exit_2_or_run_cleanly(root, case):
    run_case(case, root / "case")


@_settings("fcs")
@given(case=FAMILIES["fcs"]())
def test_B01_fuzzed_fcs_files_are_refused_or_never_released_when_corrupt(root, case):
    run_case(case, root / "case")
