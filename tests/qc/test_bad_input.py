"""Bad input: each problem is a clear error naming the file and what is wrong, and no report is left behind."""

from __future__ import annotations

import argparse

import flowio
import numpy as np
import pytest
import yaml
from qc_helpers import edit_lot, write_lot

from mscsim.cli import main
from mscsim.errors import InputError, MscsimError
from mscsim.qc import evaluate_lot, load_lot, load_spec
from mscsim.qc.cli import run
from mscsim.qc.synthetic import Acquisition, write_tube


def _run_qc(lot, out):
    return run(argparse.Namespace(lot=str(lot), out=str(out), json=False, spec=None))


def _assert_nothing_written(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.partial")]


@pytest.fixture
def lot_path(tmp_path):
    return write_lot(tmp_path / "lot")


def test_truncated_fcs_file_is_named_and_no_report_is_left(lot_path, tmp_path):
    fcs = lot_path.parent / "tube_identity.fcs"
    fcs.write_bytes(fcs.read_bytes()[: fcs.stat().st_size // 2])
    out = tmp_path / "report"
    with pytest.raises(InputError, match="truncated") as err:
        _run_qc(lot_path, out)
    assert "tube_identity.fcs" in str(err.value)
    _assert_nothing_written(out)


def test_corrupted_fcs_file_via_the_main_cli_exits_2(lot_path, tmp_path, capsys):
    (lot_path.parent / "tube_negative_isotype.fcs").write_bytes(b"FCS3.1    garbage" * 7)
    out = tmp_path / "report"
    assert main(["qc", str(lot_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "tube_negative_isotype.fcs" in err and "FCS" in err
    _assert_nothing_written(out)


def test_panel_channel_missing_from_the_file(lot_path, tmp_path):
    edit_lot(lot_path, lambda r: r["flow"]["tubes"][0]["panel"].update({"BV510-A": "CD44"}))
    with pytest.raises(InputError) as err:
        _run_qc(lot_path, tmp_path / "report")
    message = str(err.value)
    assert "tube_identity.fcs" in message and "BV510-A" in message and "FITC-A" in message
    _assert_nothing_written(tmp_path / "report")


def test_control_acquired_at_another_voltage_does_not_match(lot_path):
    folder = lot_path.parent
    isotype = {ch: ("IgG1", 0.0) for ch in ("FITC-A", "PE-A", "PerCP-Cy5-5-A", "APC-A")}
    hot = Acquisition(voltages={"FITC-A": 560, "PE-A": 450, "PerCP-Cy5-5-A": 600, "APC-A": 620, "V450-A": 400})
    write_tube(folder / "other_control.fcs", isotype, seed=99, acquisition=hot)
    edit_lot(lot_path, lambda r: r["flow"]["tubes"][0].update({"control": "other_control.fcs"}))
    with pytest.raises(InputError) as err:
        evaluate_lot(load_lot(lot_path))
    message = str(err.value)
    assert "other_control.fcs" in message and "voltage" in message and "560" in message and "480" in message


def test_control_that_is_itself_stained_does_not_match(lot_path):
    edit_lot(lot_path, lambda r: r["flow"]["tubes"][0].update({"control": "tube_identity.fcs"}))
    with pytest.raises(InputError, match="stained for CD90") as err:
        evaluate_lot(load_lot(lot_path))
    assert "tube_identity.fcs" in str(err.value)


def test_control_missing_a_channel_of_the_tube(lot_path):
    folder = lot_path.parent
    control = flowio.FlowData(str(folder / "tube_identity_isotype.fcs"))
    keep = [i for i, n in enumerate(control.pnn_labels) if n != "APC-A"]
    events = control.as_array()[:, keep].astype(np.float32).ravel().tolist()
    with open(folder / "no_apc.fcs", "wb") as fh:
        flowio.create_fcs(fh, events, [control.pnn_labels[i] for i in keep])
    edit_lot(lot_path, lambda r: r["flow"]["tubes"][0].update({"control": "no_apc.fcs"}))
    with pytest.raises(InputError, match="APC-A") as err:
        evaluate_lot(load_lot(lot_path))
    assert "no_apc.fcs" in str(err.value)


@pytest.mark.parametrize("field", ["viability", "source", "cryo_state", "lot_id"])
def test_lot_without_a_required_field(lot_path, tmp_path, field):
    edit_lot(lot_path, lambda r: r.pop(field))
    with pytest.raises(InputError) as err:
        _run_qc(lot_path, tmp_path / "report")
    message = str(err.value)
    assert str(lot_path) in message and f"'{field}'" in message and "required" in message
    _assert_nothing_written(tmp_path / "report")


def test_misspelt_field_and_bad_value_are_named(lot_path):
    edit_lot(lot_path, lambda r: r.update({"sterilty": "negative"}))
    with pytest.raises(InputError, match="sterilty"):
        load_lot(lot_path)
    edit_lot(lot_path, lambda r: (r.pop("sterilty"), r.update({"cryo_state": "frozen"})))
    with pytest.raises(InputError, match="fresh, thawed, recovered"):
        load_lot(lot_path)


def test_missing_fcs_file_is_named_with_the_lot(lot_path):
    edit_lot(lot_path, lambda r: r["flow"]["tubes"][0].update({"file": "nowhere/tube.fcs"}))
    with pytest.raises(InputError) as err:
        load_lot(lot_path)
    assert str(lot_path) in str(err.value) and "nowhere" in str(err.value) and "not found" in str(err.value)


def test_channel_without_any_control_or_threshold(lot_path):
    edit_lot(lot_path, lambda r: r["flow"]["tubes"][0].pop("control"))
    with pytest.raises(InputError, match="no control"):
        load_lot(lot_path)


def test_B01_too_few_events_after_gating_is_not_released_with_the_reason(tmp_path):
    path = write_lot(tmp_path / "lot")
    edit_lot(path, lambda r: r["flow"].update({"gates": {"fsc_min": 2.5e5}}))
    result = evaluate_lot(load_lot(path))
    assert not result.released
    assert all(c.status in ("untrusted", "informative") for c in result.criteria if c.measure == "marker")
    assert any(c.status == "untrusted" for c in result.criteria)
    assert any("events after gating" in f and "cannot be trusted" in f for f in result.failed)


def test_unknown_spec_lists_the_presets(lot_path, tmp_path):
    with pytest.raises(InputError, match="ISCT-2006") as err:
        run(argparse.Namespace(lot=str(lot_path), out=str(tmp_path / "r"), json=False, spec="ISCT-2099"))
    assert "ISCT-2099" in str(err.value)
    _assert_nothing_written(tmp_path / "r")


def test_bad_user_spec_is_named(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "mine", "criteria": [
        {"id": "v", "measure": "viability", "op": ">=", "limit": 80, "source": ["sop"]}]}))
    with pytest.raises(InputError, match="needs op, limit and unit") as err:
        load_spec(spec)
    assert str(spec.resolve()) in str(err.value)
    spec.write_text(yaml.safe_dump({"name": "loop", "extends": "spec.yaml", "criteria": [
        {"id": "s", "measure": "sterility", "accept": ["negative"], "source": ["sop"]}]}))
    with pytest.raises(MscsimError, match="does not extend itself"):
        load_spec(spec)


def test_lot_file_that_is_not_yaml(tmp_path):
    bad = tmp_path / "lot.yaml"
    bad.write_text("lot_id: [unclosed\n")
    with pytest.raises(InputError, match="valid YAML") as err:
        load_lot(bad)
    assert str(bad) in str(err.value)


def test_non_finite_spec_limit_names_the_criterion_not_the_merged_index(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("extends: clinical-release\ncriteria:\n  - {id: viability, limit: .nan}\n")
    with pytest.raises(InputError) as err:
        load_spec(spec)
    text = str(err.value)
    assert str(spec.resolve()) in text and "criteria[id=viability].limit" in text and "finite" in text
