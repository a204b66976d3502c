"""The top test images of every active dimension of each contrastive representation,
embedded by the reference embedder: those representations' units in the catalogue and
the atlas (monoscope.catalogue), beside neurons, virtual neurons and SAE features."""

import math

import torch

from monoscope.config import from_mapping
from monoscope.contrastive.data import (
    ContrastiveDataConfig,
    contrastive_samples,
    load_contrastive_split,
)
from monoscope.contrastive.representations import load_feature_sets, top_references
from monoscope.device import resolve_device
from monoscope.embedders import EmbedderConfig, build_embedder, embed_batches
from monoscope.io import save_tensors
from monoscope.logs import start_job

start_job(snakemake)
params = snakemake.params
dataset, _ = load_contrastive_split(
    from_mapping(ContrastiveDataConfig, params.data), False, contrastive_samples(snakemake.input)
)
name = params.embedder_name
config = from_mapping(EmbedderConfig, params.embedder)
embedder = build_embedder(name, config, resolve_device(params.device))
image_shape = tuple(dataset[0][0].shape)


def batches(positions: list[int]):
    for start in range(0, len(positions), config.batch_size):
        chunk = positions[start : start + config.batch_size]
        yield torch.stack([dataset[p][0] for p in chunk])


jobs = zip(
    params.representations,
    params.features,
    snakemake.input.features,
    snakemake.output.references,
    strict=True,
)
for representation, features, features_path, output in jobs:
    sets, classes = load_feature_sets(features_path)
    test = sets["test"]
    # A dimension that never exceeds zero on the test split has no references to show.
    dimensions = torch.nonzero(test.features.max(dim=0).values > 0).flatten()
    positions = top_references(test.features, dimensions, params.n)  # [U, n]
    flat = positions.flatten().tolist()
    total = math.ceil(len(flat) / config.batch_size)
    vectors = embed_batches(embedder, batches(flat), image_shape, total, representation)
    save_tensors(
        output,
        {
            "dimensions": dimensions,
            "positions": positions,
            "labels": test.labels[positions],
            "embeddings": vectors.reshape(*positions.shape, vectors.shape[-1]),
        },
        {
            "representation": representation,
            "features": features,
            "classes": list(classes),
            "embedder": name,
        },
    )
