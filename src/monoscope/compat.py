"""Adapters for known defects of our dependencies, each applied only when needed.

1. torchvision on a CPU-only torch: torchvision's compiled ops (``_C.so``) link CUDA
   libraries that a CPU build of torch lacks. ``import torchvision`` then fails with
   ``operator torchvision::nms does not exist`` because its Python side registers
   fake kernels for ops whose schemas were never defined. Defining the two schemas
   (``nms`` and ``qnms``) before the first import makes everything monoscope uses work
   (models, transforms); only ``torchvision.ops.nms`` stays unavailable.
   Where the compiled ops do load, defining the schemas again would abort the whole
   process (duplicate registration is a C++ error), so we only define them after the
   library demonstrably failed to load.

2. torchvision's start-up cost: ``torchvision.ops.roi_align`` runs
   ``from torch._dynamo.utils import is_compile_supported`` at import time, and that one
   line imports all of TorchDynamo (most of what ``import torchvision`` costs:
   ``benchmarks/bench_startup.py`` measures both ways), although the function is only called when ``roi_align`` itself runs, which
   monoscope never does. Every Snakemake job that builds a model imports torchvision
   (zennit's canonizers match its blocks), so the demo paid it ~70 times. While
   torchvision is being imported we hand it a stand-in ``torch._dynamo.utils`` whose
   ``is_compile_supported`` imports the real one on its first call; the stand-in leaves
   ``sys.modules`` as soon as torchvision is in, so any later ``import torch._dynamo``
   (``torch.compile``) loads the real package.

3. umap-learn compiles its numba kernels in every process (most of a circuit UMAP
   figure's job; ``benchmarks/bench_startup.py`` measures compiled against cached) because it does not ask numba to cache them.
   :func:`cache_umap_compilation` turns numba's on-disk cache on for those kernels
   before their first call, so only the first process on a machine compiles; the cache
   is keyed on umap's source files and gives the same results.

4. zennit-crp 0.6.0 on numpy 2: ``crp.helper.load_stat_targets`` calls ``np.int``,
   which numpy 2 removed. We hand ``crp.helper`` a numpy proxy that has ``int``; the
   global numpy module is left untouched.

5. dcor compiles its numba kernels on every import (most of an evaluation job;
   ``benchmarks/bench_startup.py`` measures its import both ways), although it asks numba to cache them: two of its kernels are closures over other
   jitted functions, and numba keys a closure's cache entry on the pickled closure
   cells, where each jitted function pickles with a fresh random uuid. Every process
   misses the cache, compiles again and adds a file to dcor's ``__pycache__``.
   :func:`import_dcor` imports dcor with those cells keyed on what the jitted function
   is (module, name, bytecode) instead, so that only the first process on a machine
   compiles. The compiled code is the same; only the cache lookup changes.

6. torch.optim's start-up cost: an optimizer's ``__init__``, ``zero_grad`` and ``step``
   each begin with ``import torch._dynamo`` (most of a short training job's start-up;
   ``benchmarks/bench_startup.py`` measures the first step both ways), only to tell TorchDynamo not to trace them and to break its graph, both
   of which mean nothing until TorchDynamo is loaded: nothing can be compiling before.
   :func:`defer_optimizer_dynamo_import` makes both wait for TorchDynamo to be loaded
   by someone else (``torch.compile``): the methods run as they are until then, and
   exactly as torch's own wrappers do from then on.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.abc
import importlib.machinery
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


_DYNAMO_UTILS = "torch._dynamo.utils"


def _real_is_compile_supported(device_type):
    """torch's ``is_compile_supported``, imported on the first call (adapter 2)."""
    from torch._dynamo.utils import is_compile_supported

    return is_compile_supported(device_type)


def dynamo_utils_stand_in() -> types.ModuleType:
    """The stand-in ``torch._dynamo.utils`` of adapter 2: ``is_compile_supported`` defers
    its import; asking it for any other name puts the real module in its place and
    answers from it (should a torchvision import ever need more of TorchDynamo)."""
    stand_in = types.ModuleType(_DYNAMO_UTILS)
    stand_in.is_compile_supported = _real_is_compile_supported

    def real_attribute(name: str):
        if name.startswith("__"):  # the import system's questions (__path__, ...)
            raise AttributeError(name)
        if sys.modules.get(_DYNAMO_UTILS) is stand_in:
            del sys.modules[_DYNAMO_UTILS]
        return getattr(importlib.import_module(_DYNAMO_UTILS), name)

    stand_in.__getattr__ = real_attribute  # PEP 562: names the module lacks
    return stand_in


class _TorchvisionLoader:
    """Wraps torchvision's own loader: runs its ``exec_module`` with the stand-in in place."""

    def __init__(self, loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        if "torch._dynamo" in sys.modules:  # already paid for: nothing to save
            return self.loader.exec_module(module)
        stand_in = dynamo_utils_stand_in()
        sys.modules[_DYNAMO_UTILS] = stand_in
        try:
            self.loader.exec_module(module)
        finally:
            if sys.modules.get(_DYNAMO_UTILS) is stand_in:
                del sys.modules[_DYNAMO_UTILS]

    def __getattr__(self, name: str):  # get_resource_reader, is_package, ...
        return getattr(self.loader, name)


class TorchvisionWithoutDynamo(importlib.abc.MetaPathFinder):
    """Finds ``torchvision`` as usual and loads it with :class:`_TorchvisionLoader`."""

    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _TorchvisionLoader(spec.loader)
        return spec


def defer_torchvision_dynamo_import() -> bool:
    """Install :class:`TorchvisionWithoutDynamo` once, before torchvision is imported.

    Returns ``True`` when it was installed now.
    """
    if "torchvision" in sys.modules:
        return False
    if any(isinstance(finder, TorchvisionWithoutDynamo) for finder in sys.meta_path):
        return False
    sys.meta_path.insert(0, TorchvisionWithoutDynamo())
    return True


UMAP_MODULES = ("umap.umap_", "umap.layouts", "umap.utils", "umap.spectral", "umap.distances")


def cache_umap_compilation() -> int:
    """Turn on numba's disk cache for umap-learn's jitted kernels (adapter 3).

    Returns how many kernels it turned on now (0 when done before or not possible).
    Only a speed-up: anything unexpected in numba's or umap's internals leaves the
    kernels as they were.
    """
    try:
        from numba.core.caching import NullCache
        from numba.core.dispatcher import Dispatcher
    except ImportError:
        return 0
    turned_on = 0
    for name in UMAP_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher) and isinstance(
                getattr(value, "_cache", None), NullCache
            ):
                try:
                    value.enable_caching()
                except Exception as error:  # noqa: BLE001 (a speed-up never breaks a figure)
                    log.debug("numba cache not enabled for %s: %s", value, error)
                    continue
                turned_on += 1
    return turned_on


def _stable_cell(value) -> bytes:
    """What a closure cell holds, as bytes that do not change between processes.

    A function, jitted or not, is named by its module, name and bytecode, followed by its
    own closure cells (dcor's closures hold other closures); anything else is left to
    numba's own serialisation.
    """
    from numba.core.dispatcher import Dispatcher
    from numba.core.serialize import dumps

    function = value.py_func if isinstance(value, Dispatcher) else value
    if not isinstance(function, types.FunctionType):
        return dumps(value)
    code = hashlib.sha256(function.__code__.co_code).hexdigest()
    kind = "jitted" if isinstance(value, Dispatcher) else "python"
    name = f"{kind}:{function.__module__}.{function.__qualname__}:{code}("
    return name.encode() + _stable_cells(function) + b")"


def _stable_cells(function) -> bytes:
    """A function's closure cells, each as :func:`_stable_cell` gives it."""
    return b"".join(_stable_cell(cell.cell_contents) for cell in function.__closure__ or ())


def _index_key_with_stable_cells(cache, sig, codegen):
    """numba's ``Cache._index_key`` with closure cells keyed by :func:`_stable_cell`."""
    function = cache._py_func
    code, cells = function.__code__.co_code, _stable_cells(function)
    digests = (hashlib.sha256(code).hexdigest(), hashlib.sha256(cells).hexdigest())
    return (sig, codegen.magic_tuple(), digests)


def _dynamo() -> types.ModuleType | None:
    """TorchDynamo when some import loaded it (then compiling is possible), else None."""
    module = sys.modules.get("torch._dynamo")
    return module if hasattr(module, "graph_break") else None


def _disable_when_dynamo_loads(function, recursive: bool):
    """What ``torch._disable_dynamo`` caches for ``function`` (adapter 6).

    The function itself while TorchDynamo is not loaded; from the first call after it
    loaded, ``torch._dynamo.disable(function)``, as torch's own wrapper makes it.
    """
    disabled = None

    def call(*args, **kwargs):
        nonlocal disabled
        if disabled is None:
            dynamo = _dynamo()
            if dynamo is None:
                return function(*args, **kwargs)
            disabled = dynamo.disable(function, recursive, wrapping=False)
        return disabled(*args, **kwargs)

    return call


def _step_without_dynamo_import(step):
    """torch.optim's ``_use_grad_for_differentiable`` wrapper of ``step`` (adapter 6),
    with TorchDynamo's graph breaks only once TorchDynamo is loaded."""

    @functools.wraps(step)
    def _use_grad(*args, **kwargs):
        optimizer = args[0]
        dynamo = _dynamo()
        previous = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(optimizer.defaults["differentiable"])
            if dynamo is not None:
                dynamo.graph_break()
            result = step(*args, **kwargs)
        finally:
            if dynamo is not None:
                dynamo.graph_break()
            torch.set_grad_enabled(previous)
        return result

    _use_grad.without_dynamo_import = True
    return _use_grad


def _closure_values(function) -> dict:
    return dict(
        zip(
            function.__code__.co_freevars,
            (c.cell_contents for c in function.__closure__),
            strict=True,
        )
    )


def defer_optimizer_dynamo_import() -> int:
    """Install adapter 6 on torch.optim's optimizers; returns how many methods it changed.

    Only methods that still are torch's own wrappers (recognised by their code objects)
    are changed, and only on optimizer classes none of whose instances has stepped yet,
    so a torch that wraps them differently is left as it is.
    """
    from torch.optim import optimizer as optim_module

    if "torch._dynamo" in sys.modules:  # already paid for: nothing to save
        return 0
    disable_code = torch._disable_dynamo(lambda: None).__code__
    use_grad_code = optim_module._use_grad_for_differentiable(lambda: None).__code__
    changed = 0
    for name in ("state_dict", "load_state_dict", "zero_grad", "add_param_group"):
        method = vars(optim_module.Optimizer).get(name)
        if getattr(method, "__code__", None) is not disable_code:
            continue
        function = method.__wrapped__
        if getattr(function, "__dynamo_disable", None) is None:
            recursive = _closure_values(method).get("recursive", True)
            setattr(function, "__dynamo_disable", _disable_when_dynamo_loads(function, recursive))
            changed += 1
    classes = list(optim_module.Optimizer.__subclasses__())
    while classes:
        cls = classes.pop()
        classes.extend(cls.__subclasses__())
        step = vars(cls).get("step")
        if getattr(step, "__code__", None) is use_grad_code and not getattr(step, "hooked", False):
            cls.step = _step_without_dynamo_import(_closure_values(step)["func"])
            changed += 1
    return changed


class _LazyGufunc:
    """A ``numba.guvectorize`` result built on its first use instead of at definition."""

    def __init__(self, build) -> None:
        self._build = build
        self._gufunc = None

    def _built(self):
        if self._gufunc is None:
            self._gufunc = self._build()
        return self._gufunc

    def __call__(self, *args, **kwargs):
        return self._built()(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._built(), name)


def import_dcor():
    """``import dcor`` with its numba kernels loaded from the disk cache (adapter 5).

    The patched cache key applies only while dcor is imported (its kernels have explicit
    signatures and compile then) and only to dcor's own functions. dcor's row-wise
    gufuncs (``dcor.rowwise``, which monoscope does not call) are built on first use: the
    parallel target's cannot be cached and cost seconds at every import.
    """
    if "dcor" in sys.modules:
        return sys.modules["dcor"]
    try:
        from numba.core.caching import Cache
    except ImportError:  # numba's internals moved: import dcor as it is (slow, correct)
        import dcor

        return dcor
    import numba

    original_key, original_guvectorize = Cache._index_key, numba.guvectorize

    def index_key(self, sig, codegen):
        if getattr(self._py_func, "__module__", "").startswith("dcor."):
            return _index_key_with_stable_cells(self, sig, codegen)
        return original_key(self, sig, codegen)

    def lazy_guvectorize(*args, **kwargs):
        return lambda function: _LazyGufunc(lambda: original_guvectorize(*args, **kwargs)(function))

    Cache._index_key, numba.guvectorize = index_key, lazy_guvectorize
    try:
        import dcor
    finally:
        Cache._index_key, numba.guvectorize = original_key, original_guvectorize
    return dcor


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
