"""Compile a model composition once, not once per process: the compiled model kept on disk.

Each composition is filed under its :func:`~mscsim.model.compile.model_key` (a hash of the mechanisms' content,
which are switched on, the code generator's format and the mscsim version), in the user's cache directory
(``platformdirs.user_cache_dir("mscsim")``, or ``$MSCSIM_CACHE_DIR``; ``MSCSIM_CACHE_DIR=off`` turns the cache
off). An entry is a folder holding ``model.json`` (names, units, stoichiometry, Jacobian pattern, rate laws and
the generated source) and, once the compiled engine has run, its Numba module and Numba's own machine-code cache.

Safe under concurrent processes: an entry is written whole into a private temporary folder and renamed into
place in one step (a process that loses the race discards its copy), so a reader sees a complete entry or none.
An unreadable, corrupt or mismatched entry is recompiled and replaced; an unwritable cache directory means
compiling in memory, as without a cache.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .compiled import CompiledModel, model_key
from .core import Model

_ENTRY = "model.json"
_FIELDS = ("state_names", "state_units", "param_names", "param_units", "process_names", "rate_text")


def cache_root() -> Path | None:
    """The cache directory, or None when the cache is turned off (``MSCSIM_CACHE_DIR=off``)."""
    env = os.environ.get("MSCSIM_CACHE_DIR")
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mscsim", appauthor=False))


def entry_dir(key: str) -> Path | None:
    """Where the entry for ``key`` lives (whether or not it exists yet)."""
    root = cache_root()
    return None if root is None else root / "models" / key[:40]


def load_compiled(model: Model) -> CompiledModel:
    """The compiled model for a composition: from the cache when a valid entry exists, else compiled (and stored
    when the cache is writable)."""
    key = model_key(model)
    where = entry_dir(key)
    if where is not None:
        cached = _read(where / _ENTRY, model, key)
        if cached is not None:
            return cached
    from .compile import compile_model  # SymPy: imported only when a composition is compiled

    compiled = compile_model(model)
    if where is not None:
        _write(where, compiled)
    return compiled


def _read(path: Path, model: Model, key: str) -> CompiledModel | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("key") != key:
            return None
        fields = {k: tuple(str(v) for v in data[k]) for k in _FIELDS}
        S = np.asarray(data["stoichiometry"], dtype=float).reshape(len(fields["state_names"]),
                                                                   len(fields["process_names"]))
        rows = np.asarray(data["jac_rows"], dtype=np.intp)
        cols = np.asarray(data["jac_cols"], dtype=np.intp)
        if rows.shape != cols.shape or len(fields["state_names"]) != len(model.states):
            return None
        return CompiledModel(model=model, stoichiometry=S, jac_rows=rows, jac_cols=cols, source=str(data["source"]),
                             scalar_source=str(data["scalar_source"]), key=key, linear=bool(data["linear"]),
                             **fields)
    except (OSError, ValueError, KeyError, TypeError):  # missing, partial or corrupt: compile afresh
        return None


def _write(where: Path, cm: CompiledModel) -> None:
    data = {k: list(getattr(cm, k)) for k in _FIELDS}
    data.update(key=cm.key, stoichiometry=cm.stoichiometry.ravel().tolist(), jac_rows=cm.jac_rows.tolist(),
                jac_cols=cm.jac_cols.tolist(), source=cm.source, scalar_source=cm.scalar_source,
                linear=cm.linear)
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=where.parent))
    except OSError:
        return  # unwritable: run from memory
    try:
        (tmp / _ENTRY).write_text(json.dumps(data), encoding="utf-8")
        if where.exists():  # a corrupt or stale entry: move it aside first (another process may do the same)
            aside = Path(tempfile.mkdtemp(prefix=".old-", dir=where.parent))
            try:
                os.replace(where, aside / "entry")
            except OSError:
                pass
            shutil.rmtree(aside, ignore_errors=True)
        os.replace(tmp, where)  # atomic on one filesystem; fails if another process put a fresh entry there
    except OSError:
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_file_atomically(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` through a temporary file and a rename; False when the folder is unwritable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False


def cache_info() -> dict:
    """Where the cache is, how many compiled models it holds and its size on disk (models and the printed
    endpoint functions of :mod:`mscsim.endpoints.evaluate`)."""
    root = cache_root()
    if root is None:
        return {"directory": None, "entries": 0, "bytes": 0}
    models = root / "models"
    entries = [p for p in models.iterdir() if p.is_dir() and not p.name.startswith(".")] if models.is_dir() else []
    size = sum(f.stat().st_size for d in (models, root / "endpoints") if d.is_dir() for f in d.rglob("*")
               if f.is_file())
    return {"directory": str(root), "entries": len(entries), "bytes": size}


def clear_cache() -> int:
    """Remove every cached model (and printed endpoint function); returns how many models there were."""
    root = cache_root()
    if root is None:
        return 0
    shutil.rmtree(root / "endpoints", ignore_errors=True)
    models = root / "models"
    if not models.is_dir():
        return 0
    n = sum(1 for p in models.iterdir() if p.is_dir() and not p.name.startswith("."))
    shutil.rmtree(models, ignore_errors=True)
    return n
