"""Load a pretrained subject model once and record what it is (fails clearly if absent)."""

from pathlib import Path

from monoscope.config import from_mapping
from monoscope.io import write_json
from monoscope.logs import setup_logging
from monoscope.models import ModelConfig, layer_channels, load_model

setup_logging(snakemake.log[0])
config = from_mapping(ModelConfig, snakemake.params.model)
model = load_model(config)
channels = layer_channels(model, snakemake.params.layers, snakemake.params.image_size)
weights = Path(config.weights)
write_json(
    snakemake.output.check,
    {
        "name": config.name,
        "weights": config.weights,
        "weight_file_bytes": weights.stat().st_size if weights.is_file() else None,
        "parameters": sum(p.numel() for p in model.net.parameters()),
        "layer_channels": channels,
        "normalization": model.normalization.record(),
        "has_head": model.has_head,
    },
)
