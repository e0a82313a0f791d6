"""Strict JSON for everything this program writes: non-finite floats (NaN, ±Inf) become null;
:func:`jsonable` turns numpy scalars and arrays inside records into plain Python values.

``json.dumps`` writes bare ``NaN``/``Infinity`` by default, which is not JSON; every output
goes through :func:`finite_json` and ``allow_nan=False`` instead.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["finite_json", "jsonable"]


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±Inf) replaced by None: valid JSON always."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    try:
        import numpy as np

        if isinstance(obj, np.floating):
            return finite_json(float(obj))
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.ndarray):
            return finite_json(obj.tolist())
    except ImportError:  # pragma: no cover
        pass
    return obj


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays (anything with ``tolist``) made plain Python values,
    dict keys made strings, tuples made lists; everything else as it is."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return obj.tolist()
    return obj
