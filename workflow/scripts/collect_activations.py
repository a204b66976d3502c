"""Pooled activations of the configured layers over one shard of the data set."""

from monoscope.activations import ActivationConfig, collect_activations, save_activation_shard
from monoscope.config import from_mapping
from monoscope.data import DataConfig, open_dataset, parse_scatteritem, shard_positions
from monoscope.device import resolve_device
from monoscope.logs import start_job
from monoscope.models import ModelConfig, load_model

start_job(snakemake)
params = snakemake.params
dataset = open_dataset(from_mapping(DataConfig, params.data), snakemake.input.samples)
model = load_model(from_mapping(ModelConfig, params.model), resolve_device(params.device))
shard, shards = parse_scatteritem(snakemake.wildcards.scatteritem)
collected = collect_activations(
    model,
    dataset,
    params.layers,
    from_mapping(ActivationConfig, params.activations),
    is_train=(dataset.table["split"] == "train").to_numpy(),
    device=resolve_device(params.device),
    positions=shard_positions(len(dataset), shard, shards),
    desc=f"activations {shard}/{shards}",
)
for layer, path in zip(params.layers, snakemake.output.activations, strict=True):
    metadata = {"layer": layer, "shard": shard, "shards": shards, "model": model.name}
    save_activation_shard(path, collected[layer], metadata | dict(params.activations))
