"""Train one base autoencoder (the arch wildcard) on the training orbits, resumably; then the
latents of every orbit member, and M with h(g x) ~ M h(x) fitted on the training orbits."""

import torch

from monoscope.device import resolve_device
from monoscope.equivariant.autoencoders import (
    AutoencoderConfig,
    orbit_latents,
    save_autoencoder,
    train_autoencoder,
)
from monoscope.equivariant.orbit_data import load_orbit_data
from monoscope.equivariant.symmetry import evaluate_symmetry, fit_symmetry
from monoscope.io import guard_checkpoint, release_checkpoint, save_tensors, write_json
from monoscope.logs import start_job

start_job(snakemake)
device = resolve_device(snakemake.params.device)
data = load_orbit_data(snakemake.input.data)
config = AutoencoderConfig.from_dict(
    {**snakemake.params.autoencoder, "architecture": snakemake.wildcards.arch}
)
checkpoint = snakemake.params.checkpoint
guard_checkpoint(checkpoint, list(snakemake.input), config.to_dict())
# Canonical images only: the rotation augmentation supplies the other members.
images = data.canonical_float(~data.test_orbits)
model, history = train_autoencoder(images, config, device, checkpoint)
save_autoencoder(snakemake.output.model, model.cpu(), config, history)
write_json(snakemake.output.history, {"config": config.to_dict(), "history": history})

# The latents of the saved model (in eval mode, as train_autoencoder returns it).
model.to(device)
latents = orbit_latents(model, data.canonical_float(), data.orbit_size, device=device)
save_tensors(snakemake.output.latents, {"latents": latents.contiguous()}, {"kind": "orbit_latents"})
train = torch.from_numpy(~data.test_orbits)
options = snakemake.params.symmetry
fit = fit_symmetry(latents[train], ridge=options["ridge"], refine_steps=options["refine_steps"])
held_out = evaluate_symmetry(latents[~train], fit.matrix)
save_tensors(snakemake.output.symmetry, {"matrix": fit.matrix.contiguous()}, {"kind": "symmetry"})
write_json(snakemake.output.fit, {"train": fit.to_dict(), "test": held_out.to_dict()})
# Only now: a job killed during the fit resumes from the finished checkpoint.
release_checkpoint(checkpoint)
