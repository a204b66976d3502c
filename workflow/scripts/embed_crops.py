"""Embed one shard of crops with one embedder, cutting the crops from the data set."""

import math

from monoscope.config import from_mapping
from monoscope.crops import iter_crops, load_crops
from monoscope.data import DataConfig, open_dataset
from monoscope.device import resolve_device
from monoscope.embedders import EmbedderConfig, build_embedder, embed_batches
from monoscope.io import save_tensors
from monoscope.logs import start_job

start_job(snakemake)
params = snakemake.params
# The rule's one output (named here, positional in the rules derived from it in sae.smk).
(output,) = snakemake.output
name = snakemake.wildcards.embedder
config = from_mapping(EmbedderConfig, params.embedder)
embedder = build_embedder(name, config, resolve_device(params.device))
crops, metadata = load_crops(snakemake.input.crops)
dataset = open_dataset(from_mapping(DataConfig, params.data), snakemake.input.samples)
# Crops are cut one embedder batch at a time: the same batches as embedding stored crops.
rows = crops["sample_ids"].numel()
vectors = embed_batches(
    embedder,
    iter_crops(dataset, crops, params.size, config.batch_size),
    (3, params.size, params.size),
    total=math.ceil(rows / config.batch_size),
    desc=name,
)
save_tensors(
    output,
    {
        "channels": crops["channels"],
        "sample_ids": crops["sample_ids"],
        "embeddings": vectors.reshape(*crops["sample_ids"].shape, vectors.shape[-1]),
    },
    metadata | {"embedder": name, "kind": config.kind, "pooling": config.pooling},
)
