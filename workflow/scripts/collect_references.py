"""Top-N references of every channel over one shard of the data set."""

from monoscope.config import from_mapping
from monoscope.data import DataConfig, open_dataset, parse_scatteritem, shard_positions
from monoscope.device import resolve_device
from monoscope.logs import start_job
from monoscope.models import ModelConfig, load_model
from monoscope.references import ReferenceConfig, collect_references, save_references

start_job(snakemake)
device = resolve_device(snakemake.params.device)
dataset = open_dataset(from_mapping(DataConfig, snakemake.params.data), snakemake.input.samples)
model = load_model(from_mapping(ModelConfig, snakemake.params.model), device)
config = from_mapping(ReferenceConfig, snakemake.params.references)
shard, shards = parse_scatteritem(snakemake.wildcards.scatteritem)
positions = shard_positions(len(dataset), shard, shards)
references = collect_references(
    model,
    dataset,
    snakemake.params.layers,
    config,
    device,
    positions,
    desc=f"shard {shard}/{shards}",
)
save_references(
    snakemake.output.references,
    references,
    metadata={"n_samples": len(positions), "shard": shard, "shards": shards, "model": model.name},
)
