"""Helpers for the QC tests: synthetic lots written into a temporary folder."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from mscsim.qc.synthetic import write_lot_tubes

#: A lot record that passes every clinical-release test, apart from its flow section.
PASSING_RECORD = {
    "lot_id": "TEST-001",
    "source": "bone_marrow",
    "donor": {"id": "D-1", "type": "allogeneic"},
    "passage": 4,
    "population_doublings": 14.0,
    "viability": {"value": 92, "unit": "percent", "method": "trypan blue"},
    "cryo_state": "thawed",
    "sterility": "negative",
    "mycoplasma": "negative",
    "endotoxin": {"value": 0.2, "unit": "EU/mL", "dose_volume_mL": 50, "patient_weight_kg": 70},
    "karyotype": "normal",
    "plastic_adherence": "pass",
    "differentiation": {"osteogenic": "positive", "adipogenic": "positive", "chondrogenic": "positive"},
}


def write_lot(folder: Path, *, fractions: dict[str, float] | None = None, seed: int = 3, drop: tuple[str, ...] = (),
              flow_changes: dict | None = None, **changes) -> Path:
    """Write synthetic tubes (true positive fractions, overriding a passing lot's) and a lot YAML; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    flow = write_lot_tubes(folder, "tube", fractions=fractions, seed=seed)
    flow.update(flow_changes or {})
    record = {**copy.deepcopy(PASSING_RECORD), **changes, "flow": flow}
    for key in drop:
        record.pop(key, None)
    path = folder / "lot.yaml"
    path.write_text(yaml.safe_dump(record, sort_keys=False))
    return path


def edit_lot(path: Path, edit) -> Path:
    """Apply ``edit(record)`` to a written lot YAML in place."""
    record = yaml.safe_load(path.read_text())
    edit(record)
    path.write_text(yaml.safe_dump(record, sort_keys=False))
    return path


def criterion(result, cid: str):
    return next(c for c in result.criteria if c.id == cid)
