"""Merge the per-shard top-N references into the top N of the whole data set."""

from monoscope.logs import setup_logging
from monoscope.references import merge_reference_files, save_references

setup_logging(snakemake.log[0])
merged, metadata = merge_reference_files(snakemake.input.shards, snakemake.params.n)
save_references(snakemake.output.references, merged, metadata)
