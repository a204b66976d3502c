"""Train one SAE (family and loss wildcards) on the training orbits' latents; test metrics."""

import torch

from monoscope.device import resolve_device
from monoscope.equivariant.orbit_data import load_orbit_data
from monoscope.equivariant.saes import OrbitSAEConfig, evaluate_orbit_sae, train_orbit_sae
from monoscope.io import guard_checkpoint, load_tensors, release_checkpoint, write_json
from monoscope.logs import start_job
from monoscope.sae import save_sae

start_job(snakemake)
device = resolve_device(snakemake.params.device)
wildcards = snakemake.wildcards
data = load_orbit_data(snakemake.input.data)
latents = load_tensors(snakemake.input.latents)[0]["latents"]
symmetry = load_tensors(snakemake.input.symmetry)[0]["matrix"]
config = OrbitSAEConfig.from_dict(
    {
        **snakemake.params.sae,
        "family": wildcards.family,
        "loss_type": None if wildcards.loss == "mse" else wildcards.loss,
    }
)
checkpoint = snakemake.params.checkpoint
guard_checkpoint(checkpoint, list(snakemake.input), config.to_dict())
train = torch.from_numpy(~data.test_orbits)
sae, history = train_orbit_sae(
    latents[train],
    config,
    symmetry if config.family == "equivariant" else None,
    device,
    checkpoint,
)
save_sae(sae.cpu(), snakemake.output.model, {"config": config.to_dict(), "history": history})
write_json(
    snakemake.output.metrics,
    {
        "architecture": wildcards.arch,
        "family": wildcards.family,
        "loss": wildcards.loss,
        "name": config.name,
        "num_features": sae.num_features,
        "test": evaluate_orbit_sae(sae, latents[~train]),
        "history": history,
    },
)
release_checkpoint(checkpoint)
