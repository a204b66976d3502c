"""Relevance-cropped references of one range of upper channels."""

import torch

from monoscope.config import from_mapping
from monoscope.crops import CropConfig, render_crops, save_crops
from monoscope.data import DataConfig, open_dataset, parse_scatteritem, shard_positions
from monoscope.device import resolve_device
from monoscope.logs import setup_logging
from monoscope.models import ModelConfig, load_model
from monoscope.references import load_references

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
params = snakemake.params
device = resolve_device(params.device)
references, _ = load_references(snakemake.input.references)
top = references[(params.reference_mode, params.upper)]
shard, shards = parse_scatteritem(snakemake.wildcards.scatteritem)
channels = shard_positions(top.n_channels, shard, shards)
crops = render_crops(
    load_model(from_mapping(ModelConfig, params.model), device),
    open_dataset(from_mapping(DataConfig, params.data), snakemake.input.samples),
    top,
    params.upper,
    channels,
    from_mapping(CropConfig, params.crops),
    device,
)
save_crops(snakemake.output[0], crops, {"layer": params.upper, "shard": shard, "shards": shards})
