"""The documentation cannot rot: the site builds with ``mkdocs build --strict`` (its tutorials execute against this
mscsim while it builds), and the notebook-style script in docs/ runs using only the public API."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_notebook_script_runs_with_the_public_api_only(tmp_path, monkeypatch, capsys):
    script = ROOT / "docs" / "notebooks" / "whatif.py"
    source = script.read_text()
    imports = [line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert all(not m.startswith("mscsim.") for m in imports), "the notebook uses only `import mscsim`"
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path / "out")])
    runpy.run_path(str(script), run_name="__main__")
    printed = capsys.readouterr().out
    assert "pain VAS, day 90 (mm, median of 4 patients)" in printed and "refused:" in printed
    assert (tmp_path / "out" / "dose_response" / "sweep.csv").is_file()
    assert (tmp_path / "out" / "guided" / "tissue_response.png").is_file()


def test_docs_site_builds_strict(tmp_path, monkeypatch):
    """``mkdocs build --strict``: every page, link and API reference resolves and every tutorial block runs."""
    try:
        from mkdocs.commands.build import build
        from mkdocs.config import load_config
    except ImportError:
        pytest.skip("MKDOCS NOT INSTALLED: the docs build test needs the docs extra (pip install '.[docs]'; "
                    ".ci/run installs it); the site was NOT built")
    monkeypatch.chdir(ROOT)  # the tutorials read repository files (examples/, benchmarks/results/)
    monkeypatch.setenv("NO_MKDOCS_2_WARNING", "1")
    config = load_config(str(ROOT / "mkdocs.yml"), site_dir=str(tmp_path / "site"), strict=True)
    build(config)
    page = (tmp_path / "site" / "how-to" / "what-if" / "index.html").read_text()
    assert "median of 5 patients" in page and "data:image/png;base64," in page  # the tutorial ran
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "with_dose" in api and "Results" in api
    assert "fonts.googleapis" not in page  # the site works offline
