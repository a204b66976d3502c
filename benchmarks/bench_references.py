"""Benchmark of reference collection (``make bench``), all measured in one run.

On the same images and the same model it times

* a bare forward pass over the data set (the floor),
* monoscope's ActMax-only collection (forward only, stops after the deepest layer),
* monoscope's ActMax + RelMax collection (one CRP pass per batch),
* zennit-crp's ``FeatureVisualization.run``, which computes ActMax and RelMax (and
  their statistics) the way the reference code does,

and, in fresh subprocesses, the peak memory of ActMax collection over a streamed
data set of two sizes, which must not grow with the size. It also checks that
monoscope's RelMax references agree with zennit-crp's.

Results go to ``<out>/references.json`` and ``<out>/references.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import monoscope  # noqa: F401  (torchvision adapter before torchvision)
from monoscope.compat import patch_crp_numpy_int
from monoscope.data import DataConfig, DigitsSource
from monoscope.models import ModelConfig, load_model
from monoscope.references import ReferenceConfig, canonizers_for, collect_references

LAYER = "layer4"


class RepeatedDigits(Dataset):
    """``size`` samples cycling through the digits, loaded lazily one at a time."""

    def __init__(self, size: int, image_size: int = 32) -> None:
        self.source = DigitsSource(DataConfig(image_size=image_size))
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        base = index % len(self.source.labels)
        row = type("Row", (), {"sample_id": base})
        return self.source.load(row), int(self.source.labels[base]), index


class InMemory(Dataset):
    """Preloaded images, so timings compare computation rather than image decoding."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index]), index


class ForCRP(Dataset):
    """zennit-crp's FeatureVisualization wants ``(image, target)`` pairs."""

    def __init__(self, dataset: InMemory) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label, _ = self.dataset[index]
        return image, label


def demo_model():
    torch.manual_seed(0)
    return load_model(ModelConfig("demo_cnn", "random", num_classes=10))


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bare_forward(model, dataset, batch_size: int) -> None:
    with torch.inference_mode():
        for images, _, _ in DataLoader(dataset, batch_size=batch_size):
            model.net(model.normalize(images))


def crp_feature_visualization(model, dataset, batch_size: int, folder: Path) -> None:
    from crp.attribution import CondAttribution
    from crp.concepts import ChannelConcept
    from crp.visualization import FeatureVisualization
    from zennit.composites import EpsilonPlusFlat

    attribution = CondAttribution(model.net, no_param_grad=True)
    visualization = FeatureVisualization(
        attribution,
        ForCRP(dataset),
        {LAYER: ChannelConcept()},
        preprocess_fn=model.normalize,
        max_target="sum",
        abs_norm=True,
        path=str(folder),
    )
    composite = EpsilonPlusFlat(canonizers=canonizers_for(model.net))
    visualization.run(composite, 0, len(dataset), batch_size=batch_size, checkpoint=10**9)


def relmax_agreement(ours, folder: Path, n: int) -> dict:
    """Compare monoscope's RelMax top-n with zennit-crp's, rank by rank.

    The ranked scores must match; sample ids may differ only where scores tie exactly
    (copies of one image, or a channel with no relevance), which the two
    implementations order differently (monoscope: smaller sample id first).
    """
    from crp.helper import load_maximization

    ids, scores, _ = load_maximization(folder / "RelMax_sum_normed", LAYER)
    ids = np.asarray(ids)[:n].T.astype(np.int64)  # [C, n]
    scores = np.asarray(scores)[:n].T
    same_id = ids == ours.sample_ids[:, :n].numpy()
    score_difference = np.abs(scores - ours.scores[:, :n].numpy())
    return {
        "max_abs_score_difference": float(score_difference.max()),
        "same_sample_share": float(same_id.mean()),
        "different_sample_not_a_tie": int((~same_id & (score_difference > 1e-6)).sum()),
    }


def memory_probe(size: int, batch_size: int) -> dict:
    """Run in a fresh process: peak RSS of ActMax collection over ``size`` streamed samples."""
    torch.set_num_threads(2)
    model = demo_model()
    dataset = RepeatedDigits(size)
    collect_references(model, RepeatedDigits(64), [LAYER], ReferenceConfig(n=8, batch_size=64))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    collect_references(model, dataset, [LAYER], ReferenceConfig(n=100, batch_size=batch_size))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"samples": size, "peak_rss_mib": after / 1024, "growth_mib": (after - before) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--samples", type=int, default=4096, help="images in the timing runs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n", type=int, default=40, help="references per channel")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-sizes", type=int, nargs=2, default=(2000, 16000))
    parser.add_argument("--memory-probe", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args.batch_size)))
        return

    torch.set_num_threads(2)
    patch_crp_numpy_int()
    model = demo_model()
    stream = RepeatedDigits(args.samples)
    images = torch.stack([stream[i][0] for i in range(args.samples)])
    labels = torch.tensor([stream[i][1] for i in range(args.samples)])
    dataset = InMemory(images, labels)
    batch, n, repeats = args.batch_size, args.n, args.repeats
    actmax_only = ReferenceConfig(n=n, modes=("actmax",), batch_size=batch)
    both = ReferenceConfig(n=n, modes=("actmax", "relmax"), batch_size=batch)

    print(f"timing {args.samples} images, batch {batch}, best of {repeats} ...", flush=True)
    forward_s = best_of(repeats, lambda: bare_forward(model, dataset, batch))
    actmax_s = best_of(repeats, lambda: collect_references(model, dataset, [LAYER], actmax_only))
    both_s = best_of(repeats, lambda: collect_references(model, dataset, [LAYER], both))
    with tempfile.TemporaryDirectory() as folder:
        crp_s = best_of(
            1, lambda: crp_feature_visualization(model, dataset, batch, Path(folder) / "fv")
        )
        ours = collect_references(model, dataset, [LAYER], both)[("relmax", LAYER)]
        agreement = relmax_agreement(ours, Path(folder) / "fv", n)

    memory = []
    for size in args.memory_sizes:
        probe = subprocess.run(
            [sys.executable, __file__, "--memory-probe", str(size), "--batch-size", str(batch)],
            capture_output=True,
            text=True,
            check=True,
        )
        memory.append(json.loads(probe.stdout.strip().splitlines()[-1]))

    record = {
        "model": "demo_cnn (random weights; timing does not depend on them)",
        "layer": LAYER,
        "samples": args.samples,
        "batch_size": batch,
        "n": n,
        "threads": torch.get_num_threads(),
        "seconds": {
            "bare_forward": forward_s,
            "actmax": actmax_s,
            "actmax_relmax": both_s,
            "crp_feature_visualization_run": crp_s,
        },
        "ratios": {
            "actmax_over_bare_forward": actmax_s / forward_s,
            "crp_run_over_actmax": crp_s / actmax_s,
            "crp_run_over_actmax_relmax": crp_s / both_s,
        },
        "relmax_agreement_with_crp": agreement,
        "memory": memory,
        "memory_growth_ratio": memory[1]["peak_rss_mib"] / memory[0]["peak_rss_mib"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "references.json").write_text(json.dumps(record, indent=2) + "\n")
    table = [
        "| what | seconds | ratio |",
        "|---|---:|---:|",
        f"| bare forward pass | {forward_s:.3f} | 1.00 |",
        f"| monoscope ActMax | {actmax_s:.3f} | {actmax_s / forward_s:.2f} x forward |",
        f"| monoscope ActMax + RelMax | {both_s:.3f} | {both_s / forward_s:.2f} x forward |",
        f"| zennit-crp FeatureVisualization.run | {crp_s:.3f} | {crp_s / actmax_s:.1f} x ActMax, "
        f"{crp_s / both_s:.1f} x ActMax+RelMax |",
        "",
        f"RelMax top-{n} against zennit-crp: ranked scores differ by at most "
        f"{agreement['max_abs_score_difference']:.2e}; same sample at the same rank in "
        f"{agreement['same_sample_share']:.3f} of slots, the rest exact ties "
        f"({agreement['different_sample_not_a_tie']} differences that are not ties).",
        "",
        "| streamed samples | peak RSS (MiB) | growth during collection (MiB) |",
        "|---:|---:|---:|",
        *[f"| {m['samples']} | {m['peak_rss_mib']:.0f} | {m['growth_mib']:.1f} |" for m in memory],
    ]
    text = "\n".join(table) + "\n"
    (args.out / "references.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
