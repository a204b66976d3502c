"""Write the sample table (ids, labels, split) and the class names of the data set."""

from monoscope.config import from_mapping
from monoscope.data import DataConfig, make_sample_table
from monoscope.io import atomic_path, write_json
from monoscope.logs import setup_logging

setup_logging(snakemake.log[0])
table, classes = make_sample_table(from_mapping(DataConfig, snakemake.params.data))
with atomic_path(snakemake.output.samples) as temporary:
    table.to_csv(temporary, index=False)
write_json(snakemake.output.classes, classes)
