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
from monoscope.contrastive.data import (
    ContrastiveDataConfig,
    contrastive_samples,
    load_contrastive_split,
)
from monoscope.crops import crop_bytes, crop_images, load_crops
from monoscope.data import DataConfig, open_dataset
from monoscope.logs import progress_kwargs, start_job
from monoscope.units import kind_label

start_job(snakemake)
log = logging.getLogger("build_atlas")
params, inputs = snakemake.params, snakemake.input
config = from_mapping(AtlasConfig, params.atlas)
size = config.thumbnail
catalogue = load_catalogue(inputs.catalogue)
records = catalogue["units"]
plans = plan_sprites(records, config)
dataset = open_dataset(from_mapping(DataConfig, params.data), inputs.samples)


def crops_by_unit(paths):
    """Each unit's crop boxes ``[N, 3]`` and heatmap thumbnails ``[N, s, s]`` (``None``
    when the crop jobs kept none) by unit index, from the crop shards ``paths``."""
    units = {}
    for path in paths:
        crops, _ = load_crops(path)
        maps = crops.get("heatmaps")
        if maps is None and config.heatmaps:
            raise ValueError(
                f"{path} holds no heatmap thumbnails, but atlas.heatmaps is "
                f"{config.heatmaps}; rerun its crop job (its heatmap_size param is set "
                "from atlas.thumbnail)"
            )
        for row, unit in enumerate(crops["channels"].tolist()):
            units[unit] = (crops["boxes"][row], None if maps is None else maps[row])
    return units


# Each family's crops: neurons, then every SAE's features (.../sae/<layer>/<sae>/crops/).
neuron_crops = crops_by_unit(inputs.crops)
sae_shards = defaultdict(list)
for path in inputs.sae_crops:
    folder = Path(path).parent.parent
    sae_shards[(kind_label("sae", folder.name), folder.parent.name)].append(path)
sae_crops = {key: crops_by_unit(paths) for key, paths in sae_shards.items()}


def thumbnails(images: torch.Tensor) -> np.ndarray:
    """Float images [B, 3, H, W] in [0, 1] as uint8 [B, size, size, 3]."""
    small = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
    return (small.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


# Contrastive dimensions' references are whole test images of their own data set.
contrastive_test = None
if any(record.get("dimension") is not None for record in records):
    contrastive_test, _ = load_contrastive_split(
        from_mapping(ContrastiveDataConfig, params.contrastive_data),
        False,
        contrastive_samples(snakemake.input),
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
        boxes, maps = neuron_crops[record["neuron"]]
    else:
        boxes, maps = sae_crops[(record["kind"], record["layer"])][record["feature"]]
    rows = np.asarray(dataset.position_of(sample_ids.numpy())).reshape(-1)
    images = torch.stack([dataset[int(row)][0] for row in rows])
    # The images are loaded already: crop them here rather than reload them (cut_crops).
    crops = crop_bytes(crop_images(images, boxes[slots], size)).permute(0, 2, 3, 1).numpy()
    small = thumbnails(images)
    heatmaps = {}
    if plan.heatmap_slots:
        chosen = maps[torch.tensor(plan.heatmap_slots)].float()
        if chosen.shape[-1] != size:  # kept at another thumbnail size
            chosen = F.interpolate(chosen[:, None], size=(size, size), mode="area")[:, 0]
        heatmaps = {
            plan.column(slot): overlay(small[plan.column(slot)], heatmap_colours(heatmap.numpy()))
            for slot, heatmap in zip(plan.heatmap_slots, chosen, strict=True)
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
