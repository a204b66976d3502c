"""A PNG grid of one neuron's relevance-cropped references, cut from the data set."""

import torch

from monoscope.config import from_mapping
from monoscope.crops import cut_crops, load_crops
from monoscope.data import DataConfig, open_dataset
from monoscope.logs import setup_logging
from monoscope.plotting import plot_crop_grid
from monoscope.references import row_of_channel

setup_logging(snakemake.log[0])
params = snakemake.params
neuron = int(snakemake.wildcards.neuron)
for path in snakemake.input.crops:
    crops, _ = load_crops(path)
    if neuron in crops["channels"].tolist():
        row = row_of_channel(crops["channels"], neuron)
        dataset = open_dataset(from_mapping(DataConfig, params.data), snakemake.input.samples)
        plot_crop_grid(
            cut_crops(dataset, crops["sample_ids"][row], crops["boxes"][row], params.size),
            snakemake.output.figure,
            columns=params.columns,
            title=f"neuron {neuron}: relevance-cropped references",
        )
        break
else:
    selected = load_crops(snakemake.input.crops[0])[1].get("selected", [])
    row_of_channel(torch.tensor(selected, dtype=torch.int64), neuron)  # names the neurons
    raise ValueError(f"figures.neurons: neuron {neuron} is in no crop shard")
