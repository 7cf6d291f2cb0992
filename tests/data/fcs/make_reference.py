"""Record what an independent FCS parser (fcsparser 0.2.8) reads from the vendored instrument files.

Run once, by hand, in a throwaway environment where fcsparser works (it pins NumPy < 2):

    python -m venv /tmp/fcsref && . /tmp/fcsref/bin/activate
    pip install "numpy<2" "pandas<2.3" six fcsparser==0.2.8
    python tests/data/fcs/make_reference.py

It writes ``fcsparser_reference.json`` beside this file: per file, fcsparser's FCS version, shape, channel
names, the sum of every column over all events and the raw values of 200 evenly spaced events. The tests
compare mscsim's own reader (FlowIO) with these numbers, so they need neither fcsparser nor NumPy < 2.
"""

from __future__ import annotations

import json
import lzma
import tempfile
from pathlib import Path

import fcsparser
import numpy as np

HERE = Path(__file__).resolve().parent
FILES = ("facs_diva_test.fcs.xz", "Sample_Well_A02.fcs.xz", "SG_2014-09-26_Duplicate_Names.fcs.xz")
ROWS = 200


def _text(v) -> str:
    return v.decode("ascii") if isinstance(v, bytes) else str(v)


def main() -> None:
    out = {"parser": f"fcsparser {fcsparser.__version__ if hasattr(fcsparser, '__version__') else '0.2.8'}",
           "numpy": np.__version__, "files": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in FILES:
            path = Path(tmp) / name.removesuffix(".xz")
            path.write_bytes(lzma.decompress((HERE / name).read_bytes()))
            meta, frame = fcsparser.parse(str(path), reformat_meta=True)
            data = frame.to_numpy(dtype=np.float64)
            rows = np.linspace(0, len(data) - 1, ROWS).astype(int)
            out["files"][path.name] = {
                "version": _text(meta["__header__"]["FCS format"]).removeprefix("FCS"),
                "shape": list(data.shape), "channels": [str(c) for c in frame.columns],
                "column_sums": [float(s) for s in data.sum(axis=0)],
                "rows": rows.tolist(), "values": data[rows].tolist()}
    (HERE / "fcsparser_reference.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
