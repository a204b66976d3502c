"""Concatenate the neuron-range shards of circuits, in channel order."""

from monoscope.logs import setup_logging
from monoscope.pure.circuits import load_circuits, merge_circuits, save_circuits

setup_logging(snakemake.log[0])
parts = [load_circuits(path) for path in snakemake.input.shards]
metadata = {key: value for key, value in parts[0][1].items() if key != "shard"}
# The shards record the neurons selection they split, so a missing shard is caught.
merged = merge_circuits([part for part, _ in parts], metadata.get("selected"))
save_circuits(snakemake.output.circuits, merged, metadata)
