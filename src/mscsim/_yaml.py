"""YAML reading for mscsim's bundled data: PyYAML's safe loader, with libyaml's C parser when PyYAML was built with
it (the same data, several times faster; a cached ``mscsim simulate`` reads some hundred data files)."""

from __future__ import annotations

import yaml

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str):
    """``yaml.safe_load`` with the fastest safe loader available."""
    return yaml.load(text, Loader=LOADER)  # noqa: S506 - a safe loader
