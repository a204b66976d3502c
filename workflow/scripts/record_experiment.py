"""Record the data and model sections this experiment's results are made from.

The Snakefile compares the record with the config at every start and refuses a changed
one (monoscope.preflight.check_experiment_record), so a mistyped override cannot make
Snakemake rerun, and on failure delete, an experiment's results.
"""

from monoscope.io import write_json
from monoscope.logs import setup_logging

setup_logging(snakemake.log[0])
write_json(snakemake.output.record, snakemake.params.record)
