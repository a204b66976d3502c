"""Circuits and activation baselines of one shard of the selected upper channels."""

import torch

from monoscope.config import from_mapping
from monoscope.data import DataConfig, open_dataset, parse_scatteritem
from monoscope.device import resolve_device
from monoscope.logs import setup_logging
from monoscope.models import ModelConfig, load_model
from monoscope.pure.circuits import CircuitConfig, compute_circuits, save_circuits
from monoscope.references import channel_shard, select_channels

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
dataset = open_dataset(from_mapping(DataConfig, params.data), snakemake.input.samples)
model = load_model(from_mapping(ModelConfig, params.model), device)
circuits = compute_circuits(
    model,
    dataset,
    top.sample_ids[channels],
    channels,
    params.lower_layer,
    params.upper_layer,
    from_mapping(CircuitConfig, params.circuits),
    device,
)
save_circuits(
    snakemake.output.circuits,
    circuits,
    {
        "lower": params.lower_layer,
        "upper": params.upper_layer,
        "reference_mode": params.reference_mode,
    }
    | {"method": params.circuits["method"], "shard": shard, "shards": shards}
    | {"selected": select_channels(top, params.neurons).tolist()},
)
