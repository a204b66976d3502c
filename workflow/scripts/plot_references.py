"""PNG grids of the top references of the analysed (or the first) channels, one per mode and
layer."""

from monoscope.config import from_mapping
from monoscope.data import DataConfig, open_dataset
from monoscope.io import read_json
from monoscope.logs import setup_logging
from monoscope.plotting import plot_reference_grid
from monoscope.references import load_references, select_channels

setup_logging(snakemake.log[0])
params = snakemake.params
references, _ = load_references(snakemake.input.references)
dataset = open_dataset(from_mapping(DataConfig, params.data), snakemake.input.samples)
class_names = read_json(snakemake.input.classes)
for (mode, layer), grid in zip(params.grids, snakemake.output.grids, strict=True):
    # The upper layer's grid shows the analysed neurons (the neurons key), others the first.
    # The selection is made on the circuits' references (circuits.references), in every mode.
    shown = (
        select_channels(references[(params.reference_mode, layer)], params.neurons)
        if layer == params.upper_layer
        else None
    )
    plot_reference_grid(
        references[(mode, layer)],
        dataset,
        grid,
        class_names=class_names,
        channels=params.grid["channels"],
        columns=params.grid["columns"],
        title=f"{layer}: top references by {mode}",
        channel_ids=shown,
    )
