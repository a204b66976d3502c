"""A PNG grid of each figure neuron's relevance-cropped references, cut from the data set."""

import torch

from monoscope.config import from_mapping
from monoscope.crops import cut_crops, load_crops
from monoscope.data import DataConfig, open_dataset
from monoscope.logs import setup_logging
from monoscope.plotting import plot_crop_grid
from monoscope.references import row_of_channel

setup_logging(snakemake.log[0])
params = snakemake.params
shards = [load_crops(path) for path in snakemake.input.crops]
dataset = open_dataset(from_mapping(DataConfig, params.data), snakemake.input.samples)
for neuron, figure in zip(params.neurons, snakemake.output.figures, strict=True):
    shard = next((crops for crops, _ in shards if neuron in crops["channels"].tolist()), None)
    if shard is None:
        selected = shards[0][1].get("selected", [])
        row_of_channel(torch.tensor(selected, dtype=torch.int64), neuron)  # names the neurons
        raise ValueError(f"figures.neurons: neuron {neuron} is in no crop shard")
    row = row_of_channel(shard["channels"], neuron)
    plot_crop_grid(
        cut_crops(dataset, shard["sample_ids"][row], shard["boxes"][row], params.size),
        figure,
        columns=params.columns,
        title=f"neuron {neuron}: relevance-cropped references",
    )
