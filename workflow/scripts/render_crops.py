"""Relevance-cropped references of one shard of the selected upper channels."""

import torch

from monoscope.config import from_mapping
from monoscope.crops import CropConfig, render_crops, save_crops
from monoscope.data import DataConfig, open_dataset, parse_scatteritem
from monoscope.device import resolve_device
from monoscope.logs import setup_logging
from monoscope.models import ModelConfig, load_model
from monoscope.references import channel_shard, select_channels
from monoscope.units import Neurons

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
params = snakemake.params
device = resolve_device(params.device)
top, channels = channel_shard(
    snakemake.input.references,
    params.reference_mode,
    params.upper_layer,
    snakemake.wildcards.scatteritem,
    params.neurons,
)
shard, shards = parse_scatteritem(snakemake.wildcards.scatteritem)
model = load_model(from_mapping(ModelConfig, params.model), device)
crops = render_crops(
    Neurons(model, params.upper_layer),
    open_dataset(from_mapping(DataConfig, params.data), snakemake.input.samples),
    top,
    channels,
    from_mapping(CropConfig, params.crops),
    device,
)
selected = select_channels(top, params.neurons).tolist()  # lets the merge check coverage
save_crops(
    snakemake.output.crops,
    crops,
    {"layer": params.upper_layer, "shard": shard, "shards": shards, "selected": selected},
)
