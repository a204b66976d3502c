"""Latents of every orbit member, and M with h(g x) ~ M h(x) fitted on the training orbits."""

import torch

from monoscope.device import resolve_device
from monoscope.equivariant.autoencoders import load_autoencoder, orbit_latents
from monoscope.equivariant.orbit_data import load_orbit_data
from monoscope.equivariant.symmetry import evaluate_symmetry, fit_symmetry
from monoscope.io import save_tensors, write_json
from monoscope.logs import start_job

start_job(snakemake)
device = resolve_device(snakemake.params.device)
data = load_orbit_data(snakemake.input.data)
model, _, _ = load_autoencoder(snakemake.input.model, device)
latents = orbit_latents(model, data.canonical_float(), data.orbit_size, device=device)
save_tensors(snakemake.output.latents, {"latents": latents.contiguous()}, {"kind": "orbit_latents"})
train = torch.from_numpy(~data.test_orbits)
options = snakemake.params.symmetry
fit = fit_symmetry(latents[train], ridge=options["ridge"], refine_steps=options["refine_steps"])
held_out = evaluate_symmetry(latents[~train], fit.matrix)
save_tensors(snakemake.output.symmetry, {"matrix": fit.matrix.contiguous()}, {"kind": "symmetry"})
write_json(snakemake.output.fit, {"train": fit.to_dict(), "test": held_out.to_dict()})
