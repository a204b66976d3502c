"""A PNG grid of one neuron's relevance-cropped references, cut from the data set."""

from monoscope.config import from_mapping
from monoscope.crops import cut_crops, load_crops
from monoscope.data import DataConfig, open_dataset
from monoscope.logs import setup_logging
from monoscope.plotting import plot_crop_grid

setup_logging(snakemake.log[0])
params = snakemake.params
neuron = int(snakemake.wildcards.neuron)
for path in snakemake.input.crops:
    crops, _ = load_crops(path)
    rows = (crops["channels"] == neuron).nonzero().flatten()
    if len(rows):
        row = int(rows[0])
        dataset = open_dataset(from_mapping(DataConfig, params.data), snakemake.input.samples)
        plot_crop_grid(
            cut_crops(dataset, crops["sample_ids"][row], crops["boxes"][row], params.size),
            snakemake.output[0],
            columns=params.columns,
            title=f"neuron {neuron}: relevance-cropped references",
        )
        break
else:
    raise ValueError(
        f"figures.neurons: neuron {neuron} is in no crop shard (does the layer have it?)"
    )
