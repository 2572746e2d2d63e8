"""Plain-text tables and JSON files for the bound reports (no state; JSON written atomically)."""
import math

import numpy as np

from .. import _atomic


def fmt(value):
    """Compact cell text: floats in 4 significant digits, None as '-', the rest via str()."""
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return str(float(value))
        return f"{value:.4g}"
    if isinstance(value, (tuple, list)):
        return "x".join(str(v) for v in value)
    return str(value)


def table(rows, columns, title=None):
    """Left-aligned text table of ``rows`` (dicts) over ``columns`` (keys; missing → '-')."""
    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = [] if title is None else [title]
    lines.append("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else str(v)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_json(path, obj):
    """Write ``obj`` (dicts, lists, numbers, arrays; non-finite floats as strings) to ``path`` atomically."""
    _atomic.write_json(path, _plain(obj), indent=2, end="\n")
