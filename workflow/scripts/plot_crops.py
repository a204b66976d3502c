"""A PNG grid of one neuron's relevance-cropped references."""

from monoscope.crops import load_crops
from monoscope.logs import setup_logging
from monoscope.plotting import plot_crop_grid

setup_logging(snakemake.log[0])
neuron = int(snakemake.wildcards.neuron)
for path in snakemake.input:
    crops, _ = load_crops(path)
    rows = (crops["channels"] == neuron).nonzero().flatten()
    if len(rows):
        plot_crop_grid(
            crops["crops"][int(rows[0])],
            snakemake.output[0],
            columns=snakemake.params.columns,
            title=f"neuron {neuron}: relevance-cropped references",
        )
        break
else:
    raise ValueError(
        f"figures.neurons: neuron {neuron} is in no crop shard (does the layer have it?)"
    )
