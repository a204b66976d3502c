"""The unit atlas: sprites of every family's references (images, crops, heatmaps) and
the static site (monoscope.atlas) of the catalogue's units."""

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from monoscope.atlas import (
    AtlasConfig,
    heatmap_colours,
    overlay,
    plan_sprites,
    site_size,
    sprite_array,
    write_site,
    write_size_table,
)
from monoscope.catalogue import load_catalogue, neuron_id, virtual_neuron_id
from monoscope.config import from_mapping
from monoscope.contrastive.data import ContrastiveDataConfig, load_contrastive_split
from monoscope.crops import crop_bytes, crop_images, load_crops
from monoscope.data import DataConfig, open_dataset
from monoscope.device import resolve_device
from monoscope.logs import progress_kwargs, start_job
from monoscope.models import ModelConfig, load_model
from monoscope.references import load_references
from monoscope.sae import load_sae
from monoscope.units import Neurons, SAEFeatures, kind_label

start_job(snakemake)
log = logging.getLogger("build_atlas")
params, inputs = snakemake.params, snakemake.input
device = resolve_device(params.device)
config = from_mapping(AtlasConfig, params.atlas)
size = config.thumbnail
catalogue = load_catalogue(inputs.catalogue)
records = catalogue["units"]
plans = plan_sprites(records, config, heatmap_k=params.figure_k)
dataset = open_dataset(from_mapping(DataConfig, params.data), inputs.samples)
model = load_model(from_mapping(ModelConfig, params.model), device)
references, _ = load_references(inputs.references)
top = references[(params.reference_mode, params.upper_layer)]


def boxes_by_row(paths):
    """Each unit's crop boxes ``[N, 3]`` by unit index, from the crop shards ``paths``."""
    boxes = {}
    for path in paths:
        crops, _ = load_crops(path)
        for row, unit in enumerate(crops["channels"].tolist()):
            boxes[unit] = crops["boxes"][row]
    return boxes


# Each family's unit kind (its heatmaps) and boxes: neurons, then every SAE's features.
neuron_boxes = boxes_by_row(inputs.crops)
neurons = Neurons(model, params.upper_layer)
saes = {}
for (layer, name), sae_path in zip(params.saes, inputs.sae_models, strict=True):
    folder = Path(sae_path).parent
    shards = [path for path in inputs.sae_crops if Path(path).parent.parent == folder]
    features = SAEFeatures(model, layer, load_sae(sae_path).to(device), name)
    saes[(kind_label("sae", name), layer)] = (features, boxes_by_row(shards))


def thumbnails(images: torch.Tensor) -> np.ndarray:
    """Float images [B, 3, H, W] in [0, 1] as uint8 [B, size, size, 3]."""
    small = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
    return (small.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


# Contrastive dimensions' references are whole test images of their own data set.
contrastive_test = None
if any(record.get("dimension") is not None for record in records):
    contrastive_test, _ = load_contrastive_split(
        from_mapping(ContrastiveDataConfig, params.contrastive_data), False
    )

bases = {record["id"]: record for record in records if record["base"] == record["id"]}
sprites = {}
for base, plan in tqdm(plans.items(), desc="atlas sprites", unit="unit", **progress_kwargs()):
    record = bases[base]
    slots = torch.tensor(plan.slots)
    sample_ids = torch.tensor(record["sample_ids"])[slots]
    if record.get("dimension") is not None:
        images = torch.stack([contrastive_test[int(p)][0] for p in sample_ids])
        small = thumbnails(images)
        sprites[base] = sprite_array(small, None, {}, size)  # whole images: one row
        continue
    if record.get("feature") is None:
        unit, boxes, kind = record["neuron"], neuron_boxes[record["neuron"]], neurons
        positions = top.positions[unit, slots]
    else:
        kind, all_boxes = saes[(record["kind"], record["layer"])]
        unit, positions = record["feature"], None
        boxes = all_boxes[unit]
    rows = np.asarray(dataset.position_of(sample_ids.numpy())).reshape(-1)
    images = torch.stack([dataset[int(row)][0] for row in rows])
    # The images are loaded already: crop them here rather than reload them (cut_crops).
    crops = crop_bytes(crop_images(images, boxes[slots], size)).permute(0, 2, 3, 1).numpy()
    small = thumbnails(images)
    heated = [plan.column(slot) for slot in plan.heatmap_slots]
    heatmaps = {}
    if heated:
        chosen = torch.tensor(heated)
        maps = kind.heatmaps(
            images[chosen].to(device),
            torch.full((len(chosen),), unit, dtype=torch.int64),
            None if positions is None else positions[chosen],
            tuple(top.spatial_shape) if positions is not None else None,
        )
        maps = F.interpolate(maps[:, None].float().cpu(), size=(size, size), mode="area")[:, 0]
        heatmaps = {
            column: overlay(small[column], heatmap_colours(heatmap.numpy()))
            for column, heatmap in zip(heated, maps, strict=True)
        }
    sprites[base] = sprite_array(small, crops, heatmaps, size)

# The workflow's figures, on the pages of the units they show.
figures = defaultdict(list)
unit_ids = {record["id"] for record in records}
layer, k = params.upper_layer, params.figure_k
umaps = [("pure", neuron) for neuron in params.figure_neurons] if inputs.umaps else []
titles = [f"{method} virtual neurons at k={k}" for method, _ in params.virtual_figures]
titles += [f"circuits of the references, UMAP (PURE k={k})"] * len(umaps)
shown = zip(
    params.virtual_figures + umaps, titles, inputs.virtual_figures + inputs.umaps, strict=True
)
for (method, neuron), title, path in shown:
    figures[neuron_id(layer, neuron)].append((title, path))
    for cluster in range(k):
        figures[virtual_neuron_id(method, k, layer, neuron, cluster)].append((title, path))
figures = {unit: entries for unit, entries in figures.items() if unit in unit_ids}

index = write_site(snakemake.output.atlas, catalogue, sprites, plans, figures, config)
files, size_bytes = site_size(snakemake.output.atlas)
log.info("atlas: %d units, %d files, %.2f MB: %s", len(records), files, size_bytes / 1e6, index)
stem = Path(snakemake.output.size[0]).with_suffix("")
write_size_table(snakemake.output.atlas, stem, catalogue.get("experiment", ""))
