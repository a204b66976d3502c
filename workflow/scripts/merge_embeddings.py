"""Concatenate an embedder's shards, in channel order: embeddings [C, N, D]."""

from monoscope.io import load_tensors, merge_channel_shards, save_tensors
from monoscope.logs import setup_logging

setup_logging(snakemake.log[0])
parts = [load_tensors(path) for path in snakemake.input]
merged = merge_channel_shards([tensors for tensors, _ in parts], "embedding")
metadata = {key: value for key, value in parts[0][1].items() if key != "shard"}
save_tensors(snakemake.output[0], merged, metadata)
