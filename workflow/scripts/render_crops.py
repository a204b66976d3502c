"""Relevance-cropped references of one shard of the selected upper channels."""

from monoscope.config import from_mapping
from monoscope.crops import CropConfig, render_crops, save_crops
from monoscope.data import DataConfig, open_dataset
from monoscope.device import resolve_device
from monoscope.logs import start_job
from monoscope.models import ModelConfig, load_model
from monoscope.references import job_channel_shard
from monoscope.units import Neurons

start_job(snakemake)
params = snakemake.params
device = resolve_device(params.device)
part = job_channel_shard(snakemake)
model = load_model(from_mapping(ModelConfig, params.model), device)
crops = render_crops(
    Neurons(model, params.upper_layer),
    open_dataset(from_mapping(DataConfig, params.data), snakemake.input.samples),
    part.top,
    part.channels,
    from_mapping(CropConfig, params.crops, heatmap_size=params.heatmap_size),
    device,
)
save_crops(snakemake.output.crops, crops, {"layer": params.upper_layer} | part.metadata())
