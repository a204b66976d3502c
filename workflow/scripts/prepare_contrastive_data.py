"""Write the contrastive branch's digits sample table (ids, labels, split)."""

from monoscope.config import from_mapping
from monoscope.contrastive.data import ContrastiveDataConfig, digits_sample_table
from monoscope.io import atomic_path
from monoscope.logs import setup_logging

setup_logging(snakemake.log[0])
table, _ = digits_sample_table(from_mapping(ContrastiveDataConfig, snakemake.params.data))
with atomic_path(snakemake.output.samples) as temporary:
    table.to_csv(temporary, index=False)
