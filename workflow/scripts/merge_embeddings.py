"""Concatenate an embedder's shards, in channel order: embeddings [C, N, D]."""

from monoscope.io import load_tensors, merge_channel_shards, save_tensors
from monoscope.logs import setup_logging
from monoscope.references import load_references

setup_logging(snakemake.log[0])
# The rule's one output (named here, positional in the rules derived from it in sae.smk).
(output,) = snakemake.output
parts = [load_tensors(path) for path in snakemake.input.shards]
# SAE crops cover the alive features only, listed with the SAE's references.
expected = (
    load_references(snakemake.input.references)[1]["units"]
    if "references" in snakemake.input.keys()
    else parts[0][1].get("selected")  # the neurons selection the crops were cut for
)
merged = merge_channel_shards([tensors for tensors, _ in parts], "embedding", expected)
metadata = {key: value for key, value in parts[0][1].items() if key != "shard"}
save_tensors(output, merged, metadata)
