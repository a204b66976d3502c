"""Benchmark of circuit computation (``make bench``), all measured in one run.

On the same model, references and images it times monoscope's batched circuits against
the simple way, one zennit-crp ``CondAttribution`` call per neuron over its references
(as PURE's reference code does it), for the gradient and the LRP method, and reports
circuits per second, the ratio, the largest absolute difference between the two
outputs and, in fresh processes, the peak memory each way adds while it runs (resident set
size sampled every millisecond).

Batched circuits cannot beat the FLOP floor of the computation itself: one forward pass
of the model up to the lower layer per unique reference sample, plus one forward and one
backward pass of the sub-network lower -> upper per (neuron, reference) row. The same run
times that floor alone (images already in memory and normalised, the same chunk and row
batch sizes, no target bookkeeping, no copies out) and reports the batched way's time as
a multiple of it.

Cases: the demo (the trained demo CNN when ``results/demo`` has it, else the same
model trained here; digits; N = 100 ActMax references of all 8 upper channels), with
images preloaded and loaded from the data set, and a random-weight ResNet-18 on
random 112-pixel images with overlapping references.

Results go to ``<out>/circuits.json`` and ``<out>/circuits.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

import monoscope  # noqa: F401  (torchvision adapter before torchvision)
from monoscope.data import DataConfig, ImageDataset, InMemoryDataset, make_sample_table
from monoscope.models import ModelConfig, SubjectModel, load_model
from monoscope.models.registry import IMAGENET_MEAN, IMAGENET_STD
from monoscope.pure.circuits import (
    CircuitComputer,
    CircuitConfig,
    circuits_per_neuron_crp,
    compute_circuits,
)
from monoscope.references import ReferenceConfig, collect_references

DEMO_WEIGHTS = Path("results/demo/models/subject.safetensors")


def demo_case(n: int, preloaded: bool):
    """The demo model, the digits and the model's top-n ActMax references of layer4."""
    config = DataConfig()
    table, _ = make_sample_table(config)
    dataset = ImageDataset(config, table, "all")
    if DEMO_WEIGHTS.exists():
        model = load_model(ModelConfig("demo_cnn", str(DEMO_WEIGHTS)))
        origin = str(DEMO_WEIGHTS)
    else:
        from monoscope.models.train import TrainConfig, train_demo_cnn

        groups = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
        train, test = ImageDataset(config, table, "train"), ImageDataset(config, table, "test")
        model, _ = train_demo_cnn(train, test, TrainConfig(label_groups=groups), num_labels=10)
        origin = "trained by the benchmark (make demo not run yet)"
    for parameter in model.net.parameters():
        parameter.requires_grad_(False)
    top = collect_references(model, dataset, ["layer4"], ReferenceConfig(n=n))[("actmax", "layer4")]
    if preloaded:
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
        dataset = InMemoryDataset(images, dataset.labels, dataset.sample_ids)
    return model, dataset, top.sample_ids, "layer3", "layer4", origin


def resnet_case(neurons: int = 32, n: int = 20, samples: int = 200, size: int = 112):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    model = SubjectModel("torchvision:resnet18 (random)", net, IMAGENET_MEAN, IMAGENET_STD)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(samples, 3, size, size, generator=generator)
    dataset = InMemoryDataset(images, torch.zeros(samples, dtype=torch.int64))
    sample_ids = torch.stack(
        [torch.randperm(samples, generator=generator)[:n] for _ in range(neurons)]
    )
    return model, dataset, sample_ids, "layer3", "layer4", "random weights"


def build_case(name: str):
    if name == "demo":
        return demo_case(100, preloaded=True)
    if name == "demo-loading":
        return demo_case(100, preloaded=False)
    if name == "resnet18":
        return resnet_case()
    raise ValueError(name)


def run_batched(case, method: str):
    model, dataset, sample_ids, lower, upper, _ = case
    channels = range(len(sample_ids))
    config = CircuitConfig(method=method)
    return compute_circuits(model, dataset, sample_ids, channels, lower, upper, config).circuits


def run_per_neuron(case, method: str):
    model, dataset, sample_ids, lower, upper, _ = case
    channels = range(len(sample_ids))
    return circuits_per_neuron_crp(model, dataset, sample_ids, channels, lower, upper, method)


def floor_parts(case, method: str) -> tuple[float, float]:
    """Seconds of the two passes the batched way cannot avoid, each timed alone:
    the prefix forward over the unique samples, and the sub-network forward and backward
    over all rows (in the batched way's chunk and row-batch sizes)."""
    model, dataset, sample_ids, lower, upper, _ = case
    config = CircuitConfig(method=method)
    unique_ids, inverse = torch.unique(sample_ids, return_inverse=True)
    positions = dataset.position_of(unique_ids.numpy())
    images = model.normalize(torch.stack([dataset[int(p)][0] for p in positions]))
    channels = torch.arange(len(sample_ids))[:, None].expand_as(sample_ids).reshape(-1)
    row_sample = inverse.reshape(-1)
    order = torch.argsort(row_sample, stable=True)
    channels, row_sample = channels[order], row_sample[order]
    with CircuitComputer(model, lower, upper, method) as computer:
        start = time.perf_counter()
        with torch.inference_mode():
            lower_out = torch.cat(
                [
                    computer.prefix(images[first : first + config.sample_batch])
                    for first in range(0, len(images), config.sample_batch)
                ]
            )
        prefix_s = time.perf_counter() - start
        lower_out = lower_out.clone()  # an ordinary tensor autograd can use
        start = time.perf_counter()
        for first in range(0, len(row_sample), config.batch_rows):
            rows = slice(first, first + config.batch_rows)
            inputs = lower_out[row_sample[rows]].requires_grad_(True)
            output = computer.subnet(inputs)
            picked = output[torch.arange(len(inputs)), channels[rows]].sum()
            torch.autograd.grad(picked, inputs)
        rows_s = time.perf_counter() - start
    return prefix_s, rows_s


def best_of(repeats: int, fn) -> tuple[float, torch.Tensor]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


class PeakMemory:
    """Peak resident memory above the level at entry, sampled every millisecond."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.start = 0
        self._stop = threading.Event()

    def rss(self) -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * self.page

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.001)

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = self.rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def added_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def measure(case_name: str, method: str, repeats: int) -> dict:
    case = build_case(case_name)
    model, _, sample_ids, lower, upper, origin = case
    rows = sample_ids.numel()
    batched_s, batched = best_of(repeats, lambda: run_batched(case, method))
    simple_s, simple = best_of(repeats, lambda: run_per_neuron(case, method))
    floors = [floor_parts(case, method) for _ in range(repeats)]
    prefix_s = min(part[0] for part in floors)
    rows_s = min(part[1] for part in floors)
    memory = {}
    for way in ("batched", "per_neuron"):  # each in a fresh process: no allocator reuse
        probe = subprocess.run(
            [sys.executable, __file__, "--memory-probe", case_name, way, method],
            capture_output=True,
            text=True,
            check=True,
        )
        memory[way] = json.loads(probe.stdout.strip().splitlines()[-1])
    return {
        "case": case_name,
        "model": model.name,
        "weights": origin,
        "layers": f"{lower} -> {upper}",
        "method": method,
        "neurons": len(sample_ids),
        "references": sample_ids.shape[1],
        "rows": rows,
        "unique_samples": len(torch.unique(sample_ids)),
        "batched_seconds": batched_s,
        "per_neuron_seconds": simple_s,
        "batched_circuits_per_second": rows / batched_s,
        "per_neuron_circuits_per_second": rows / simple_s,
        "speedup": simple_s / batched_s,
        "floor_prefix_seconds": prefix_s,
        "floor_rows_seconds": rows_s,
        "floor_seconds": prefix_s + rows_s,
        "times_floor": batched_s / (prefix_s + rows_s),
        "max_abs_difference": float((batched - simple).abs().max()),
        "median_abs_difference": float((batched - simple).abs().median()),
        "memory": memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-probe", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        case_name, way, method = args.memory_probe
        torch.set_num_threads(2)
        case = build_case(case_name)
        with PeakMemory() as peak:
            (run_batched if way == "batched" else run_per_neuron)(case, method)
        print(json.dumps({"added_mib": peak.added_mib}))
        return

    torch.set_num_threads(2)
    runs = [
        ("demo", "gradient"),
        ("demo", "lrp"),
        ("demo-loading", "gradient"),
        ("resnet18", "gradient"),
        ("resnet18", "lrp"),
    ]
    results = []
    for case_name, method in runs:
        print(f"{case_name}, {method} ...", flush=True)
        results.append(measure(case_name, method, args.repeats))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "circuits.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "| case | method | rows (unique samples) | batched circuits/s | per-neuron CRP circuits/s "
        "| speed-up | floor s (prefix + rows) | batched s | batched / floor "
        "| max abs diff | peak memory added, batched / per-neuron (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['case']} | {r['method']} | {r['rows']} ({r['unique_samples']}) "
            f"| {r['batched_circuits_per_second']:.0f} | {r['per_neuron_circuits_per_second']:.0f} "
            f"| {r['speedup']:.1f}x "
            f"| {r['floor_seconds']:.3f} ({r['floor_prefix_seconds']:.3f} + "
            f"{r['floor_rows_seconds']:.3f}) | {r['batched_seconds']:.3f} "
            f"| {r['times_floor']:.2f}x | {r['max_abs_difference']:.1e} "
            f"| {r['memory']['batched']['added_mib']:.1f} / "
            f"{r['memory']['per_neuron']['added_mib']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    (args.out / "circuits.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
