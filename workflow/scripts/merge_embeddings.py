"""Concatenate an embedder's shards, in channel order: embeddings [C, N, D]."""

import torch

from monoscope.io import load_tensors, save_tensors
from monoscope.logs import setup_logging

setup_logging(snakemake.log[0])
parts = [load_tensors(path) for path in snakemake.input]
merged = {key: torch.cat([tensors[key] for tensors, _ in parts]) for key in parts[0][0]}
order = torch.argsort(merged["channels"])
merged = {key: value[order] for key, value in merged.items()}
if not torch.equal(merged["channels"], torch.arange(len(order))):
    raise ValueError("embedding shards do not cover every upper channel exactly once; rerun them")
metadata = {key: value for key, value in parts[0][1].items() if key != "shard"}
save_tensors(snakemake.output[0], merged, metadata)
