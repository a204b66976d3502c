"""The robustness table, the representations table and the accuracy-vs-noise curves."""

from monoscope.contrastive.representations import (
    plot_accuracy_vs_noise,
    representations_frame,
    robustness_frame,
    setting_name,
)
from monoscope.io import read_json
from monoscope.logs import setup_logging
from monoscope.tables import table_stem, write_table

setup_logging(snakemake.log[0])
records = [read_json(path) for path in snakemake.input.probes]
settings = [setting_name(noise, level) for noise, level in snakemake.params.settings]
write_table(
    robustness_frame(records, settings),
    table_stem(snakemake.output.robustness),
    "Test accuracy (%) of each probe on each representation, clean and under noise.",
    label="tab:contrastive-robustness",
)

units = [read_json(path) for path in snakemake.input.units]
write_table(
    representations_frame(units, records),
    table_stem(snakemake.output.representations),
    "Monosemanticity of each representation's dimensions on the test split (class "
    "consistency: share of the top class among samples activating a dimension; hierarchy "
    "score: lower is more monosemantic) and its clean accuracies (%).",
    label="tab:contrastive-representations",
)

for path in snakemake.output.figures:
    noise = path.rsplit("accuracy_vs_", 1)[1].removesuffix(".png")
    plot_accuracy_vs_noise(records, noise, path)
