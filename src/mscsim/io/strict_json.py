"""JSON that is JSON: NaN and infinity (which ``json.dumps`` writes as bare ``NaN``/``Infinity``, invalid JSON that
strict readers refuse) become null, and ``allow_nan=False`` guards the rest."""

from __future__ import annotations

import json
import math


def strict(value):
    """``value`` with every non-finite float (NumPy's too) replaced by None, in nested dicts, lists and tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def dumps(value, **kwargs) -> str:
    """``json.dumps`` of ``strict(value)``, never writing NaN or Infinity."""
    return json.dumps(strict(value), allow_nan=False, **kwargs)
