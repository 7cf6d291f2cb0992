"""Regenerate the synthetic FCS files of examples/lot_passing.yaml and examples/lot_failing.yaml.

    python examples/lots/make_example_fcs.py

Fixed seeds, so the files are the same on every run. Each lot has two stained tubes (identity markers
with HLA-DR; haematopoietic markers) and an isotype control for each, with a DAPI viability channel and
a $SPILLOVER matrix. The failing lot's CD105 is truly positive on 91% of cells (ISCT asks >= 95%).
"""

from pathlib import Path

from mscsim.qc.synthetic import Acquisition, write_lot_tubes

HERE = Path(__file__).resolve().parent
EVENTS = Acquisition(n_events=2500)



def make(folder: Path = HERE) -> list[Path]:
    """Write both lots' tubes and controls into ``folder``; return the files written."""
    passing = write_lot_tubes(folder, "passing", seed=11, acquisition=EVENTS)
    failing = write_lot_tubes(folder, "failing", fractions={"CD105": 0.91}, seed=12, acquisition=EVENTS)
    return [folder / t[k] for flow in (passing, failing) for t in flow["tubes"] for k in ("file", "control")]


if __name__ == "__main__":
    for p in make():
        print(f"{p.name}: {p.stat().st_size} bytes")
