"""The compatibility adapters: each applied only when needed, each working."""

import subprocess
import sys

import numpy as np
import pytest

from monoscope import compat


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_torchvision_imports_and_runs_after_the_adapter():
    result = run_python(
        "import torch, monoscope.compat as c\n"  # importing monoscope applies it
        "applied = c._TORCHVISION_SCHEMAS is not None\n"
        "import torchvision, torchvision.models as m, torchvision.transforms.functional as F\n"
        "y = m.resnet18().eval()(torch.zeros(1, 3, 32, 32))\n"
        "r = F.resized_crop(torch.ones(3, 8, 8), 0, 0, 4, 4, [2, 2], antialias=True)\n"
        "print(applied, tuple(y.shape), float(r.sum()))\n"
    )
    assert result.returncode == 0, result.stderr
    applied, *_ = result.stdout.split()
    # Applied exactly when the compiled ops cannot load in this environment.
    expected = not compat.compiled_ops_load(compat.torchvision_library_path())
    assert applied == str(expected)
    assert "(1, 1000)" in result.stdout
    assert result.stdout.strip().endswith("12.0")


def test_torchvision_import_leaves_dynamo_unimported_until_it_is_needed():
    result = run_python(
        "import sys, time, torch, monoscope\n"
        "start = time.perf_counter()\n"
        "import torchvision, torchvision.models\n"
        "seconds = time.perf_counter() - start\n"
        "loaded = 'torch._dynamo' in sys.modules or 'torch._dynamo.utils' in sys.modules\n"
        "from torchvision.ops import roi_align\n"
        "deferred = sys.modules['torchvision.ops.roi_align'].is_compile_supported\n"
        "import torch._dynamo.utils as real\n"
        "print(loaded, deferred('cpu') == real.is_compile_supported('cpu'),\n"
        "      deferred is not real.is_compile_supported, real.__file__.endswith('utils.py'),\n"
        "      torch._dynamo.utils is real and hasattr(torch._dynamo, 'optimize'))\n"
    )
    assert result.returncode == 0, result.stderr
    # Dynamo stayed out; the stand-in forwards to torch's own function; afterwards the
    # real torch._dynamo package imports whole (torch.compile's).
    assert result.stdout.split() == ["False", "True", "True", "True", "True"]


def test_dynamo_deferral_is_skipped_where_dynamo_is_already_imported():
    result = run_python(
        "import sys, torch._dynamo.utils as real, monoscope\n"
        "import torchvision.ops.roi_align\n"
        "print(sys.modules['torchvision.ops.roi_align'].is_compile_supported is "
        "real.is_compile_supported, monoscope.compat.defer_torchvision_dynamo_import())\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"]


def test_adapter_is_idempotent_and_skipped_once_torchvision_is_imported():
    result = run_python(
        "import monoscope.compat as c\n"
        "first = c.ensure_torchvision_importable()\n"
        "second = c.ensure_torchvision_importable()\n"
        "import torchvision\n"
        "third = c.ensure_torchvision_importable()\n"
        "print(second, third)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_compiled_ops_check_rejects_missing_and_broken_libraries(tmp_path):
    assert compat.compiled_ops_load(None) is False
    assert compat.compiled_ops_load(tmp_path / "absent.so") is False
    broken = tmp_path / "_C.so"
    broken.write_bytes(b"not a shared object")
    assert compat.compiled_ops_load(broken) is False


def test_crp_numpy_int_adapter(tmp_path):
    import crp.helper

    compat.patch_crp_numpy_int()
    if hasattr(np, "int"):
        pytest.skip("this numpy still has np.int; the adapter is not needed")
    assert compat.patch_crp_numpy_int() is False  # already applied: no-op
    assert not hasattr(np, "int")  # the global numpy is untouched
    np.save(tmp_path / "targets.npy", np.array([3.0, 1.0, 2.0]))
    targets = crp.helper.load_stat_targets(tmp_path)
    assert np.asarray(targets).tolist() == [3, 1, 2]


def test_umap_kernels_are_cached_on_disk_once_asked():
    result = run_python(
        "import umap.umap_ as u\n"
        "from numba.core.caching import FunctionCache, NullCache\n"
        "from monoscope.compat import cache_umap_compilation\n"
        "before = isinstance(u.smooth_knn_dist._cache, NullCache)\n"
        "first, again = cache_umap_compilation(), cache_umap_compilation()\n"
        "print(before, first > 10, again, isinstance(u.smooth_knn_dist._cache, FunctionCache))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "0", "True"]


def test_the_dynamo_stand_in_hands_over_to_the_real_module_for_anything_else():
    result = run_python(
        "import sys, monoscope.compat as c\n"
        "stand_in = c.dynamo_utils_stand_in()\n"
        "sys.modules['torch._dynamo.utils'] = stand_in\n"
        "import torch._dynamo\n"  # its own `from .utils import ...` needs the real module
        "from torch._dynamo.utils import counters\n"
        "print(sys.modules['torch._dynamo.utils'] is not stand_in, hasattr(counters, 'clear'),\n"
        "      stand_in.is_compile_supported('cpu') in (True, False))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True"]


def test_dcor_imports_from_numbas_cache_and_computes_the_same():
    """Adapter 5: a second process loads dcor's kernels from the cache and saves nothing."""
    code = (
        "import numpy as np, monoscope.compat as c\n"
        "from numba.core.caching import Cache\n"
        "saved = []\n"
        "original = Cache.save_overload\n"
        "Cache.save_overload = lambda self, *a: (saved.append(self._name), original(self, *a))\n"
        "dcor = c.import_dcor()\n"
        "x = np.random.default_rng(0).normal(size=200); y = x**2 + x\n"
        "fast = dcor.distance_correlation(x, y, method='avl')\n"
        "naive = dcor.distance_correlation(x, y, method='naive')\n"
        "rows = dcor.rowwise(dcor.distance_correlation, np.stack([x, x]), np.stack([y, x]))\n"
        "print(len(saved), abs(fast - naive) < 1e-12, np.allclose(rows, [naive, 1.0]))\n"
    )
    first = run_python(code)  # fills the cache where this machine's is empty
    assert first.returncode == 0, first.stderr
    assert first.stdout.split()[1:] == ["True", "True"]
    again = run_python(code)
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == ["0", "True", "True"]


def test_dcor_cache_key_ignores_the_random_uuid_of_jitted_functions():
    import numba

    from monoscope.compat import _stable_cell

    def make():
        @numba.njit
        def inner(x):
            return x + 1

        return inner

    first, second = make(), make()
    assert first._uuid != second._uuid  # what makes numba's own key differ per process
    assert _stable_cell(first) == _stable_cell(second)
    assert _stable_cell(first) != _stable_cell(numba.njit(lambda x: x - 1))


def test_warm_caches_command_runs_the_numba_compiled_paths():
    """`make install` runs it; the adapters' tests above check that the cache then serves."""
    result = subprocess.run(
        [sys.executable, "-m", "monoscope", "warm-caches"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "dcor and UMAP kernels cached" in result.stdout


OPTIMIZER_RUN = """
import sys, hashlib, torch
{setup}
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
data = torch.randn(16, 6)
for cls in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
    optimizer = cls(net.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 2)
    for _ in range(4):
        optimizer.zero_grad()
        net(data).square().mean().backward()
        optimizer.step()
        scheduler.step()
    optimizer.load_state_dict(optimizer.state_dict())
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in net.parameters()))
print("torch._dynamo" in sys.modules, torch.is_grad_enabled(), digest.hexdigest())
"""


def test_optimizers_step_without_importing_dynamo_and_give_the_same_parameters():
    """Adapter 6 against torch's own wrappers, in two fresh processes."""
    adapted = run_python(OPTIMIZER_RUN.format(setup="import monoscope"))
    plain = run_python(OPTIMIZER_RUN.format(setup=""))
    assert adapted.returncode == 0, adapted.stderr
    assert plain.returncode == 0, plain.stderr
    dynamo_loaded, grad_enabled, digest = adapted.stdout.split()
    assert (dynamo_loaded, grad_enabled) == ("False", "True")
    assert plain.stdout.split() == ["True", "True", digest]  # torch's way loads TorchDynamo


def test_optimizers_use_torchdynamos_wrappers_once_it_is_loaded():
    result = run_python(
        "import torch, monoscope\n"
        "import torch._dynamo\n"
        "calls = []\n"
        "real_disable, real_break = torch._dynamo.disable, torch._dynamo.graph_break\n"
        "torch._dynamo.disable = lambda *a, **k: (calls.append('disable'), real_disable(*a, **k))[1]\n"
        "torch._dynamo.graph_break = lambda *a: (calls.append('break'), real_break(*a))[1]\n"
        "net = torch.nn.Linear(3, 1)\n"
        "optimizer = torch.optim.SGD(net.parameters(), lr=0.1)\n"
        "optimizer.zero_grad(); net(torch.ones(2, 3)).sum().backward(); optimizer.step()\n"
        "print(sorted(set(calls)), calls.count('break'))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("]")[0] + "]" == "['break', 'disable']"
    assert result.stdout.split()[-1] == "2"  # before and after the step, as torch does


def test_optimizer_adapter_leaves_stepped_classes_and_a_loaded_dynamo_alone():
    result = run_python(
        "import torch\n"
        "net = torch.nn.Linear(3, 1)\n"
        "torch.optim.SGD(net.parameters(), lr=0.1)\n"  # hooks SGD.step, loads TorchDynamo
        "from monoscope.compat import defer_optimizer_dynamo_import\n"
        "print(defer_optimizer_dynamo_import())\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0"]
