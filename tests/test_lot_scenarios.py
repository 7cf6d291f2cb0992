"""From lot to simulation: a released lot is a scenario's product; an unreleased one is refused (B01/B02)."""

import pytest

from conftest import example, run
from mscsim import InputError
from mscsim.analysis.validation import EXAMPLES
from mscsim.cli import main


def test_B02_released_lot_sets_the_product(tmp_path):
    ds = run(example("knee_ia_released_lot", product={"lot": str(EXAMPLES / "lot_passing.yaml")}))
    assert ds.attrs["viability"] == pytest.approx(0.915)  # the lot's own post-thaw viability
    assert ds.attrs["death_multiplier"] > 1.0  # allogeneic donor and thawed cells, from the lot record
    assert ds.attrs["potency_factor"] < 1.0  # freshly thawed: cryostun


def test_B01_unreleased_lot_is_refused_with_its_reasons(tmp_path, capsys):
    data = example("knee_ia_released_lot", product={"lot": str(EXAMPLES / "lot_failing.yaml")})
    with pytest.raises(InputError) as exc:
        run(data)
    msg = str(exc.value)
    assert "product.lot" in msg and "CD105" in msg and "ndotoxin" in msg
    ok = example("knee_ia_released_lot", product={"lot": str(EXAMPLES / "lot_failing.yaml"), "allow_unreleased": True})
    assert float(run(ok)["administered"].max()) == 5e7


def test_cli_refuses_the_failing_lot_scenario(tmp_path, capsys):
    import yaml

    data = example("knee_ia_released_lot", product={"lot": str(EXAMPLES / "lot_failing.yaml")})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["simulate", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "CD105" in capsys.readouterr().err and not (tmp_path / "o").exists()
