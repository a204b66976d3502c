"""Relevance-cropped references of one range of an SAE's alive features."""

from monoscope.config import from_mapping
from monoscope.crops import CropConfig, render_crops, save_crops
from monoscope.data import DataConfig, open_dataset, parse_scatteritem, shard_positions
from monoscope.device import resolve_device
from monoscope.logs import start_job
from monoscope.models import ModelConfig, load_model
from monoscope.references import load_references
from monoscope.sae import load_sae
from monoscope.units import SAEFeatures

start_job(snakemake)
params = snakemake.params
(output,) = snakemake.output  # the rule's one output
device = resolve_device(params.device)
layer = snakemake.wildcards.layer
references, metadata = load_references(snakemake.input.references)
units = metadata["units"]
shard, shards = parse_scatteritem(snakemake.wildcards.scatteritem)
chosen = [units[i] for i in shard_positions(len(units), shard, shards)]
model = load_model(from_mapping(ModelConfig, params.model), device)
features = SAEFeatures(model, layer, load_sae(snakemake.input.sae), snakemake.wildcards.sae)
crops = render_crops(
    features,
    open_dataset(from_mapping(DataConfig, params.data), snakemake.input.samples),
    references[("sae", layer)],
    chosen,
    from_mapping(CropConfig, params.crops, heatmap_size=params.heatmap_size),
    device,
)
save_crops(output, crops, {"layer": layer, "shard": shard, "shards": shards})
