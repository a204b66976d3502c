"""A PNG grid of the top references of the analysed (or the first) channels of one layer."""

from monoscope.config import from_mapping
from monoscope.data import DataConfig, open_dataset
from monoscope.io import read_json
from monoscope.logs import setup_logging
from monoscope.plotting import plot_reference_grid
from monoscope.references import load_references, select_channels

setup_logging(snakemake.log[0])
references, _ = load_references(snakemake.input.references)
mode, layer = snakemake.wildcards.mode, snakemake.wildcards.layer
top = references[(mode, layer)]
# The upper layer's grid shows the analysed neurons (the neurons key), others the first.
# The selection is made on the circuits' references (circuits.references), in every mode.
shown = (
    select_channels(references[(snakemake.params.reference_mode, layer)], snakemake.params.neurons)
    if layer == snakemake.params.upper_layer
    else None
)
dataset = open_dataset(from_mapping(DataConfig, snakemake.params.data), snakemake.input.samples)
plot_reference_grid(
    top,
    dataset,
    snakemake.output.grid,
    class_names=read_json(snakemake.input.classes),
    channels=snakemake.params.grid["channels"],
    columns=snakemake.params.grid["columns"],
    title=f"{layer}: top references by {mode}",
    channel_ids=shown,
)
