"""The shared epoch loop and its files (monoscope.checkpoints), and the trainers that
gained a checkpoint with it (the demo network, finetuning)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from helpers import interrupted_after_first_epoch

import monoscope  # noqa: F401  (must precede any torchvision import)
from monoscope.checkpoints import (
    CheckpointKind,
    Epoch,
    TrainedModelFormat,
    checkpoint_resumable,
    read_model_file,
    save_model_file,
    train_epochs,
)
from monoscope.config import RecordConfig
from monoscope.data import InMemoryDataset
from monoscope.io import save_tensors

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KIND = CheckpointKind("toy_checkpoint")


@dataclass(frozen=True)
class ToyConfig:
    epochs: int = 3
    lr: float = 0.1
    seed: int = 0


@dataclass
class Carried:
    """A persistent generator and a running count: state beyond model and optimizer."""

    generator: torch.Generator
    count: int = 0

    def save(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {"generator": self.generator.get_state()}, {"count": self.count}

    def load(self, tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
        self.generator.set_state(tensors["generator"])
        self.count = int(record["count"])


def toy_run(config: ToyConfig, checkpoint=None, loss_scale: float = 1.0):
    """Four steps per epoch on random data: per-epoch and persistent randomness both."""
    torch.manual_seed(config.seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    carried = Carried(torch.Generator().manual_seed(config.seed + 1))

    def run_epoch(epoch: Epoch) -> dict[str, Any]:
        order = torch.randperm(8, generator=epoch.generator(0))
        total = 0.0
        for start in range(0, 8, 2):
            x = torch.randn(2, 3, generator=carried.generator) + order[start]
            loss = loss_scale * model(x).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            carried.count += 1
            epoch.advance()
        return {"loss": total / 4, "steps": epoch.step}

    history = train_epochs(
        run_epoch,
        KIND,
        model,
        optimizer,
        config,
        steps_per_epoch=4,
        checkpoint=checkpoint,
        extra=carried,
        rebuild={"width": 3},
        progress=False,
        diverged_hint="lower the lr",
    )
    return model, history, carried


def without_seconds(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def test_resumed_run_equals_uninterrupted(tmp_path, monkeypatch):
    config = ToyConfig()
    model, history, carried = toy_run(config)
    assert [r["epoch"] for r in history] == [1, 2, 3] and history[-1]["steps"] == 12
    assert all(r["seconds"] >= 0 for r in history)

    path = tmp_path / "toy.safetensors"
    interrupted_after_first_epoch(monkeypatch, lambda: toy_run(config, path))
    assert checkpoint_resumable(path, KIND, config)
    resumed, resumed_history, resumed_carried = toy_run(config, path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert without_seconds(resumed_history) == without_seconds(history)
    assert resumed_carried.count == carried.count == 12
    # the checkpoint reads as a model file of its kind, with what rebuilds it
    state, record = read_model_file(path, [KIND.name], "toy", "test")
    assert torch.equal(state["weight"], model.weight) and record["width"] == 3
    # finished: a further run trains nothing
    again, again_history, _ = toy_run(config, path)
    assert torch.equal(again.weight, model.weight) and len(again_history) == 3


def test_incompatible_checkpoints_are_refused(tmp_path):
    config = ToyConfig(epochs=1)
    path = tmp_path / "toy.safetensors"
    assert not checkpoint_resumable(path, KIND, config)  # none yet
    toy_run(config, path)
    assert checkpoint_resumable(path, KIND, dataclasses.replace(config, epochs=4))
    assert not checkpoint_resumable(path, KIND, dataclasses.replace(config, lr=0.5))
    assert not checkpoint_resumable(path, CheckpointKind("other"), config)
    with pytest.raises(ValueError, match=r"different config \(keys \['lr'\]\)"):
        toy_run(dataclasses.replace(config, lr=0.5), path)
    toy_run(dataclasses.replace(config, epochs=2), path)
    with pytest.raises(ValueError, match="beyond"):
        toy_run(config, path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    assert not checkpoint_resumable(tmp_path / "junk.safetensors", KIND, config)


def test_divergence_is_reported():
    with pytest.raises(FloatingPointError, match="diverged in epoch 1.*lower the lr"):
        toy_run(ToyConfig(), loss_scale=math.inf)


def test_model_file_round_trip(tmp_path):
    model = torch.nn.Linear(2, 2)
    path = tmp_path / "model.safetensors"
    save_model_file(path, "toy", model, {"config": {"a": 1}, "history": [], "width": 2})
    state, record = read_model_file(path, ["toy"], "toy model", "the test")
    assert torch.equal(state["weight"], model.weight)
    assert record == {"kind": "toy", "config": {"a": 1}, "history": [], "width": 2}
    with pytest.raises(ValueError, match="holds no other"):
        read_model_file(path, ["other"], "other", "the test")
    with pytest.raises(FileNotFoundError, match="written by the test"):
        read_model_file(tmp_path / "missing.safetensors", ["toy"], "toy", "the test")
    with pytest.raises(ValueError, match="history"):
        save_model_file(path, "toy", model, {"config": {}})
    old = tmp_path / "old.safetensors"  # the layout before the model-file format: no kind
    save_tensors(old, dict(model.state_dict()), {"width": 2})
    with pytest.raises(ValueError, match=r"no 'kind' record.*Regenerate it \(the test\)"):
        read_model_file(old, ["toy"], "toy model", "the test")


@dataclass(frozen=True)
class ToyRecordConfig(RecordConfig):
    section: ClassVar[str] = "toy"
    width: int = 2
    epochs: int = 1
    seed: int = 0


TOY_FILES = TrainedModelFormat(
    "toy_model",
    KIND,
    ToyRecordConfig,
    lambda config, record: torch.nn.Linear(config.width, int(record["outputs"])),
    "toy model",
    "the test",
    entries=lambda model: {"outputs": model.out_features},
)


def test_trained_model_format_round_trip_and_stale_configs(tmp_path):
    model, config = torch.nn.Linear(2, 3), ToyRecordConfig()
    path = tmp_path / "toy.safetensors"
    TOY_FILES.save(path, model, config, [{"epoch": 1}])
    loaded, loaded_config, history = TOY_FILES.load(path)
    assert torch.equal(loaded.weight, model.weight) and loaded_config == config
    assert history == [{"epoch": 1}]
    # A file whose config has keys this version no longer has (e.g. before option groups).
    save_model_file(
        path,
        "toy_model",
        model,
        {"config": {"width": 2, "old_key": 1}, "history": [], "outputs": 3},
    )
    with pytest.raises(
        ValueError, match=r"does not fit this monoscope.*Regenerate it \(the test\)"
    ):
        TOY_FILES.load(path)


def tiny_images() -> InMemoryDataset:
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(24, 3, 4, 4, generator=generator)
    images = F.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)
    return InMemoryDataset(images.clamp(0, 1), torch.arange(24) % 3)


def test_demo_training_resumes_bit_for_bit(tmp_path, monkeypatch):
    from monoscope.models import ModelConfig, load_model
    from monoscope.models.train import TrainConfig, save_demo_model, train_demo_cnn

    data = tiny_images()
    config = TrainConfig(widths=(4, 8, 8, 4), label_groups=[[0, 1], [2]], epochs=2, batch_size=8)
    model, metrics = train_demo_cnn(data, data, config, num_labels=3)
    path = tmp_path / "demo.safetensors"
    interrupted_after_first_epoch(
        monkeypatch, lambda: train_demo_cnn(data, data, config, num_labels=3, checkpoint=path)
    )
    resumed, resumed_metrics = train_demo_cnn(data, data, config, num_labels=3, checkpoint=path)
    for key, value in model.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[key]), key
    assert resumed_metrics["train_loss"] == metrics["train_loss"]
    # the model file: one record with what rebuilds it, the config and the history
    save_demo_model(model, tmp_path / "model.safetensors")
    loaded = load_model(ModelConfig(name="demo_cnn", weights=str(tmp_path / "model.safetensors")))
    assert loaded.metadata["config"]["widths"] == [4, 8, 8, 4]
    assert [r["loss"] for r in loaded.metadata["history"]] == metrics["train_loss"]


def test_finetuning_resumes_bit_for_bit(tmp_path, monkeypatch):
    from monoscope.contrastive.models import build_contrastive_model
    from monoscope.contrastive.probes import FinetuneConfig, finetune

    data = tiny_images()
    torch.manual_seed(0)
    model = build_contrastive_model(hidden_dim=16, out_dim=8, width=4)
    config = FinetuneConfig(epochs=2, batch_size=8, num_classes=3, warmup_epochs=1)
    classifier, record = finetune(model, data, data, config)
    path = tmp_path / "finetune.safetensors"
    interrupted_after_first_epoch(
        monkeypatch, lambda: finetune(model, data, data, config, checkpoint=path)
    )
    resumed, resumed_record = finetune(model, data, data, config, checkpoint=path)
    for key, value in classifier.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert resumed_record == record
