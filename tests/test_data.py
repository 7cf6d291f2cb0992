"""Parameters are data: each has units that convert, a bounded value, a source in the bibliography and a grade."""

from pathlib import Path

import pytest

from mscsim.model.parameters import DATA_DIR, load_parameter_file
from mscsim.model.references import bibliography
from mscsim.model.units import convert
from mscsim.simulation import KINETICS, compiled

FILES = sorted((DATA_DIR / "parameters").glob("*.yaml"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: Path(p).stem)
def test_every_parameter_is_cited_graded_and_has_units(path):
    bib = bibliography()
    for p in load_parameter_file(path).parameters.values():
        assert p.grade in {"human", "animal", "in_vitro", "assumed"}
        assert p.source and all(k in bib for k in p.source), (p.name, p.source)
        convert(p.value, p.units, p.units)
        assert p.note, f"{p.name} has no note saying where the number comes from"


def test_every_species_defines_every_model_parameter():
    from mscsim.model.parameters import load_parameter_sets

    model = compiled(KINETICS, ())
    for species in ("human", "mouse", "rat"):
        for site in ("knee_joint", "systemic_lesion", "perianal_fistula", "intervertebral_disc", "tendon",
                     "skeletal_muscle", "wound_bed",
                     "liver_lesion", "kidney_lesion", "lung_lesion", "heart_lesion", "gut_lesion", "brain_lesion"):
            pset = load_parameter_sets(["kinetics", "product", f"species_{species}", f"site_{site}"])
            vec = model.parameter_vector(pset)
            assert len(vec) == len(model.param_names)
