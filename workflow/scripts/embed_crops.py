"""Embed one shard of crops with one embedder."""

import torch

from monoscope.config import from_mapping
from monoscope.crops import load_crops
from monoscope.device import resolve_device
from monoscope.embedders import EmbedderConfig, build_embedder, embed_images
from monoscope.io import save_tensors
from monoscope.logs import setup_logging

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
name = snakemake.wildcards.embedder
config = from_mapping(EmbedderConfig, snakemake.params.embedder)
embedder = build_embedder(name, config, resolve_device(snakemake.params.device))
crops, metadata = load_crops(snakemake.input.crops)
vectors = embed_images(embedder, crops["crops"], config.batch_size, desc=name)
save_tensors(
    snakemake.output[0],
    {"channels": crops["channels"], "sample_ids": crops["sample_ids"], "embeddings": vectors},
    metadata | {"embedder": name, "kind": config.kind, "pooling": config.pooling},
)
