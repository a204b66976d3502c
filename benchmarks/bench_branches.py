"""Throughput of the contrastive and equivariant branches' training loops, per device.

Runs the library code the workflow jobs run (contrastive pretraining of the full-width
ResNet-18 on 32-px images, the SAE on frozen features, feature extraction with input
noise, a base autoencoder and an equivariant SAE on shapes orbits) for a few epochs on
each requested device, checks the losses are finite, and writes one JSON record with
images (or orbits) per second. On a GPU machine, run it with ``--devices cpu cuda`` to
get the speed-up measured in the same run::

    python benchmarks/bench_branches.py --devices cpu cuda --out results/bench
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import monoscope  # noqa: F401  (must precede any torchvision import)
from monoscope.contrastive import augment as aug
from monoscope.contrastive.pretrain import PretrainConfig, pretrain
from monoscope.contrastive.probes import extract_features
from monoscope.contrastive.representations import SAEOnContrastive, contrastive_sae_config
from monoscope.contrastive.robustness import input_noise_transform
from monoscope.data import InMemoryDataset
from monoscope.equivariant.autoencoders import AutoencoderConfig, orbit_latents, train_autoencoder
from monoscope.equivariant.saes import OrbitSAEConfig, train_orbit_sae
from monoscope.equivariant.shapes import ShapesConfig, generate_shapes
from monoscope.equivariant.symmetry import fit_symmetry
from monoscope.sae import TensorStore, train_sae


def synthetic_images(count: int, size: int, seed: int = 0) -> InMemoryDataset:
    """Smooth random colour images with 10 labels (throughput does not need real data)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 4, 4, generator=generator)
    images = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return InMemoryDataset(images.clamp(0, 1), torch.arange(count) % 10)


def timed(function):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def contrastive(device: str, images: int, epochs: int) -> dict:
    dataset = synthetic_images(images, 32)
    config = PretrainConfig(
        method="ncl",
        epochs=epochs,
        batch_size=256,
        warmup_epochs=1,
        augment=aug.AugmentConfig(crop_size=32),
    )
    (model, history), seconds = timed(lambda: pretrain(dataset, config, device))
    assert all(math.isfinite(record["loss"]) for record in history)
    steps = epochs * (images // config.batch_size)
    embeddings = extract_features(model, dataset, "projector", 512).features
    store = TensorStore(F.normalize(embeddings, dim=1))
    settings = {"num_features": 8 * store.dim, "k": 256, "epochs": 2, "batch_size": 1024}
    sae_config = contrastive_sae_config(settings, store.dim)
    (sae, sae_history), sae_seconds = timed(lambda: train_sae(store, sae_config, device))
    wrapped = SAEOnContrastive(model, sae).eval()
    noise = input_noise_transform("gaussian", 0.6, seed=0)
    codes, extract_seconds = timed(
        lambda: extract_features(wrapped, dataset, "projector", 512, device=device, transform=noise)
    )
    return {
        "pretrain_images_per_second": steps * config.batch_size / seconds,
        "pretrain_seconds": seconds,
        "final_loss": history[-1]["loss"],
        "sae_vectors_per_second": 2 * store.num_samples / sae_seconds,
        "sae_l0": float((codes.features > 0).sum(dim=1).float().mean()),
        "noisy_sae_codes_images_per_second": images / extract_seconds,
    }


def equivariant(device: str, orbits: int, epochs: int) -> dict:
    data = generate_shapes(ShapesConfig(num_orbits=orbits, image_size=32), progress=False)
    canonical = data.canonical_images()
    config = AutoencoderConfig(architecture="cnn", epochs=epochs, batch_size=128)
    (model, history), ae_seconds = timed(
        lambda: train_autoencoder(canonical, config, device, progress=False)
    )
    latents = orbit_latents(model, canonical, 4, device=device)
    fit = fit_symmetry(latents)
    sae_config = OrbitSAEConfig(
        family="equivariant", loss_type="canonical", k=8, epochs=epochs, n_centroids=64
    )
    (sae, sae_history), sae_seconds = timed(
        lambda: train_orbit_sae(latents, sae_config, fit.matrix, device, progress=False)
    )
    assert all(math.isfinite(record["loss"]) for record in history + sae_history)
    return {
        "autoencoder_images_per_second": epochs * orbits / ae_seconds,
        "symmetry_relative_error": fit.relative_error,
        "equivariant_sae_orbits_per_second": epochs * orbits / sae_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=["cpu"])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--orbits", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args()
    record = {"torch": torch.__version__, "threads": torch.get_num_threads(), "devices": {}}
    if torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name()
    for device in args.devices:
        record["devices"][device] = {
            "contrastive": contrastive(device, args.images, args.epochs),
            "equivariant": equivariant(device, args.orbits, args.epochs),
        }
        print(device, json.dumps(record["devices"][device], indent=1), flush=True)
    if {"cpu", "cuda"} <= set(record["devices"]):
        cpu, gpu = record["devices"]["cpu"], record["devices"]["cuda"]
        record["speedup"] = {
            f"{branch}.{key}": gpu[branch][key] / cpu[branch][key]
            for branch in ("contrastive", "equivariant")
            for key in cpu[branch]
            if key.endswith("per_second")
        }
        print("speed-up", json.dumps(record["speedup"], indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "branches.json").write_text(json.dumps(record, indent=2) + "\n")
    text = markdown(record, args)
    (args.out / "branches.md").write_text(text)
    print(text)


# The throughputs of the Markdown table: (branch, key, what is counted).
THROUGHPUTS = (
    ("contrastive", "pretrain_images_per_second", "contrastive pretraining, images/s"),
    ("contrastive", "sae_vectors_per_second", "TopK SAE on the projector output, vectors/s"),
    ("contrastive", "noisy_sae_codes_images_per_second", "noisy SAE codes, images/s"),
    ("equivariant", "autoencoder_images_per_second", "CNN base autoencoder, images/s"),
    ("equivariant", "equivariant_sae_orbits_per_second", "equivariant SAE, orbits/s"),
)


def markdown(record: dict, args: argparse.Namespace) -> str:
    devices = list(record["devices"])
    lines = [
        f"{args.images} images and {args.orbits} orbits, {args.epochs} epoch(s), torch "
        f"{record['torch']} with {record['threads']} CPU threads"
        + (f", GPU {record['gpu']}" if "gpu" in record else "")
        + ".",
        "",
        "| loop | " + " | ".join(devices) + (" | speed-up |" if "speedup" in record else " |"),
        "|---|" + "---:|" * (len(devices) + ("speedup" in record)),
    ]
    for branch, key, what in THROUGHPUTS:
        cells = [f"{record['devices'][device][branch][key]:,.0f}" for device in devices]
        if "speedup" in record:
            cells.append(f"{record['speedup'][f'{branch}.{key}']:.1f}x")
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
