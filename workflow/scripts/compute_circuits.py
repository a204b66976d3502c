"""Circuits and activation baselines of one range of upper channels."""

import torch

from monoscope.circuits import CircuitConfig, compute_circuits, save_circuits
from monoscope.config import from_mapping
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
dataset = open_dataset(from_mapping(DataConfig, params.data), snakemake.input.samples)
model = load_model(from_mapping(ModelConfig, params.model), device)
circuits = compute_circuits(
    model,
    dataset,
    top.sample_ids[channels.start : channels.stop],
    channels,
    params.lower,
    params.upper,
    from_mapping(CircuitConfig, params.circuits),
    device,
)
save_circuits(
    snakemake.output[0],
    circuits,
    {"lower": params.lower, "upper": params.upper, "reference_mode": params.reference_mode}
    | {"method": params.circuits["method"], "shard": shard, "shards": shards},
)
