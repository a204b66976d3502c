"""Helpers shared by the hierarchy modules: array coercion and short name lists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_MAX_LISTED = 20  # how many offending names an error message spells out


def _as_array(values, dtype=None) -> np.ndarray:
    """``np.asarray`` that also takes torch tensors needing grad or living on a GPU."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def _listed(names: Sequence[Any]) -> str:
    """``names`` as a short comma-separated list for error messages."""
    shown = ", ".join(str(name) for name in list(names)[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f", ... ({more} more)" if more > 0 else "")
