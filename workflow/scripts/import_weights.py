"""Convert a registry package's real weights to safetensors (monoscope.weights)."""

import contextlib

from monoscope.weights import import_weights

with open(snakemake.log[0], "w") as log, contextlib.redirect_stdout(log):
    import_weights(snakemake.params.source, snakemake.output.weights)
