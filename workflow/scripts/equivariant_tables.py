"""Probe F1 per SAE family and truncation length; reconstruction vs sparsity; M's fit."""

import pandas as pd

from monoscope.equivariant.tables import probe_table, reconstruction_table, symmetry_table
from monoscope.io import read_json
from monoscope.logs import setup_logging
from monoscope.tables import table_stem, write_table

setup_logging(snakemake.log[0])
output = snakemake.output
probes = pd.concat([pd.read_csv(path) for path in snakemake.input.probes], ignore_index=True)
write_table(
    probe_table(probes),
    table_stem(output.probes),
    "Mean F1 over all tasks of probes on the top-t latents (t in columns).",
    label="tab:equivariant-probes",
)
write_table(
    probe_table(probes[probes["invariant"]]),
    table_stem(output.probes_invariant),
    "Mean F1 over the rotation-invariant tasks of probes on the top-t latents.",
    label="tab:equivariant-probes-invariant",
)
write_table(
    reconstruction_table([read_json(path) for path in snakemake.input.metrics]),
    table_stem(output.reconstruction),
    "Reconstruction against sparsity on the test orbits (FVU: fraction of variance "
    "unexplained; orbit variance: share of the codes' variance within orbits).",
    label="tab:equivariant-reconstruction",
)
write_table(
    symmetry_table(
        {
            arch: read_json(path)
            for arch, path in zip(
                snakemake.params.architectures, snakemake.input.symmetry, strict=True
            )
        }
    ),
    table_stem(output.symmetry),
    "Fit of one matrix M with h(gx) = M h(x): relative error of each power of M on the "
    "training and test orbits, against the error of M = I.",
    label="tab:equivariant-symmetry",
)
