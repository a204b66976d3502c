"""Clean features of one representation, its units' monosemanticity, and their references."""

import torch

from monoscope.config import from_mapping
from monoscope.contrastive import representations
from monoscope.contrastive.data import (
    ContrastiveDataConfig,
    contrastive_samples,
    load_contrastive_split,
)
from monoscope.contrastive.probes import extract_features
from monoscope.device import resolve_device
from monoscope.hierarchy import distances_from_config
from monoscope.io import write_json
from monoscope.logs import start_job
from monoscope.plotting import plot_crop_grid

start_job(snakemake)
device = resolve_device(snakemake.params.device)
representation = snakemake.wildcards.representation
model = representations.load_representation(
    snakemake.input.model, snakemake.input.get("sae"), device
)
data = from_mapping(ContrastiveDataConfig, snakemake.params.data)
samples = contrastive_samples(snakemake.input)
train_ds, classes = load_contrastive_split(data, True, samples)
test_ds, _ = load_contrastive_split(data, False, samples)
which, batch_size = snakemake.params.which, snakemake.params.batch_size
train = extract_features(model, train_ds, which, batch_size, device=device)
test = extract_features(model, test_ds, which, batch_size, device=device)
representations.save_feature_sets(snakemake.output.features, classes, train=train, test=test)

distances = distances_from_config(snakemake.params.hierarchy, classes)
summary = representations.representation_summary(test.features, test.labels, distances)
write_json(snakemake.output.units, {"representation": representation, "which": which, **summary})

references = snakemake.params.references
dims = representations.reference_dimensions(train.features, references["dimensions"])
positions = representations.top_references(test.features, dims, references["n"])
images = torch.stack([test_ds[int(p)][0] for p in positions.flatten()])
plot_crop_grid(
    (images * 255).round().to(torch.uint8),
    snakemake.output.references,
    columns=positions.shape[1],
    title=f"{representation}: top test images of dimensions {dims.tolist()} (one per row)",
)
