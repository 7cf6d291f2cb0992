"""The bibliography: every citation key used by a parameter, limit or validation target resolves here."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .. import _yaml
from ..errors import DataError
from .parameters import DATA_DIR


@dataclass(frozen=True)
class Reference:
    key: str
    authors: str
    year: int | str
    title: str
    journal: str = ""
    doi: str = ""
    url: str = ""

    def formatted(self) -> str:
        """One line a reader can find the source from: authors, year, title, journal, DOI."""
        parts = [f"{self.authors} ({self.year}). {self.title}."]
        if self.journal:
            parts.append(f" {self.journal}.")
        if self.doi:
            parts.append(f" doi:{self.doi}")
        elif self.url:
            parts.append(f" {self.url}")
        return "".join(parts)


@lru_cache(maxsize=1)
def bibliography() -> dict[str, Reference]:
    """All references in ``data/references/*.yaml``, merged; a key defined twice is an error."""
    refs: dict[str, Reference] = {}
    for path in sorted((DATA_DIR / "references").glob("*.yaml")):
        raw = _yaml.safe_load(path.read_text()) or {}
        for key, rec in raw.items():
            if key in refs:
                raise DataError(f"{path}: reference key '{key}' is defined twice")
            try:
                refs[key] = Reference(key=key, **rec)
            except TypeError as exc:
                raise DataError(f"{path}: reference '{key}': {exc}") from exc
    return refs


def resolve(keys) -> list[Reference]:
    """References for the given keys, in order; an unknown key is a data error (no uncited numbers)."""
    bib = bibliography()
    missing = [k for k in keys if k not in bib]
    if missing:
        raise DataError(f"citation keys not in the bibliography (data/references/*.yaml): {missing}")
    return [bib[k] for k in keys]
