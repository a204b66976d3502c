"""Adapters for known defects of our dependencies, each applied only when needed.

1. torchvision on a CPU-only torch: torchvision's compiled ops (``_C.so``) link CUDA
   libraries that a CPU build of torch lacks. ``import torchvision`` then fails with
   ``operator torchvision::nms does not exist`` because its Python side registers
   fake kernels for ops whose schemas were never defined. Defining the two schemas
   (``nms`` and ``qnms``) before the first import makes everything monoscope uses work
   (models, transforms, ``roi_align``); only ``torchvision.ops.nms`` stays unavailable.
   Where the compiled ops do load, defining the schemas again would abort the whole
   process (duplicate registration is a C++ error), so we only define them after the
   library demonstrably failed to load.

2. zennit-crp 0.6.0 on numpy 2: ``crp.helper.load_stat_targets`` calls ``np.int``,
   which numpy 2 removed. We hand ``crp.helper`` a numpy proxy that has ``int``; the
   global numpy module is left untouched.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

# Keep the Library object alive for the life of the process: when it is
# garbage-collected, its schema definitions are removed again.
_TORCHVISION_SCHEMAS: torch.library.Library | None = None
_TORCHVISION_OPS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


def _op_defined(qualified_name: str) -> bool:
    """Whether the dispatcher knows an op schema, e.g. ``torchvision::nms``."""
    try:
        torch._C._dispatch_find_schema_or_throw(qualified_name, "")
    except RuntimeError:
        return False
    return True


def torchvision_library_path() -> Path | None:
    """Path of torchvision's compiled ops library, found without importing torchvision."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidates = sorted(Path(location).glob("_C*.so")) + sorted(Path(location).glob("_C*.pyd"))
        if candidates:
            return candidates[0]
    return None


def compiled_ops_load(library: Path | None) -> bool:
    """Try to load a compiled ops library; ``False`` when it is absent or cannot load."""
    if library is None or not Path(library).exists():
        return False
    try:
        torch.ops.load_library(str(library))
    except OSError as error:
        log.debug("torchvision ops cannot load (%s)", error)
        return False
    return True


def ensure_torchvision_importable() -> bool:
    """Make ``import torchvision`` work on a CPU-only torch.

    Returns ``True`` when the op schemas had to be defined, ``False`` when nothing
    was needed (torchvision absent, already imported, or its compiled ops load).
    Safe to call any number of times.
    """
    global _TORCHVISION_SCHEMAS
    if _TORCHVISION_SCHEMAS is not None or "torchvision" in sys.modules:
        return False
    if importlib.util.find_spec("torchvision") is None:
        return False
    if _op_defined("torchvision::nms"):
        return False
    if compiled_ops_load(torchvision_library_path()):
        return False
    library = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 (must outlive this call)
    for schema in _TORCHVISION_OPS:
        library.define(schema)
    _TORCHVISION_SCHEMAS = library
    log.info("torchvision's compiled ops do not load here; defined nms/qnms schemas instead")
    return True


class _NumpyWithInt(types.ModuleType):
    """A view of numpy that also has the removed alias ``np.int`` (= ``int``)."""

    int = int

    def __init__(self) -> None:
        super().__init__("numpy")

    def __getattr__(self, name: str):
        return getattr(np, name)


def patch_crp_numpy_int() -> bool:
    """Give ``crp.helper`` a numpy with ``np.int`` when the installed numpy lacks it.

    Returns ``True`` when the patch was applied.
    """
    if hasattr(np, "int"):
        return False
    import crp.helper

    if isinstance(crp.helper.np, _NumpyWithInt):
        return False
    crp.helper.np = _NumpyWithInt()
    return True
