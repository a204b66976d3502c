"""Train every SAE of one architecture's latents on the training orbits; test metrics."""

import torch
from tqdm import tqdm

from monoscope.device import resolve_device
from monoscope.equivariant.orbit_data import load_orbit_data
from monoscope.equivariant.saes import OrbitSAEConfig, evaluate_orbit_sae, train_orbit_sae
from monoscope.io import guard_checkpoint, load_tensors, release_checkpoint, write_json
from monoscope.logs import progress_kwargs, start_job
from monoscope.sae import save_sae

start_job(snakemake)
params = snakemake.params
device = resolve_device(params.device)
arch = snakemake.wildcards.arch
data = load_orbit_data(snakemake.input.data)
latents = load_tensors(snakemake.input.latents)[0]["latents"]
symmetry = load_tensors(snakemake.input.symmetry)[0]["matrix"]
train = torch.from_numpy(~data.test_orbits)
jobs = zip(
    params.saes, params.checkpoints, snakemake.output.models, snakemake.output.metrics, strict=True
)
for (family, loss), checkpoint, model_path, metrics_path in tqdm(
    list(jobs), desc=f"orbit SAEs {arch}", unit="sae", **progress_kwargs()
):
    config = OrbitSAEConfig.from_dict(
        {**params.sae, "family": family, "loss_type": None if loss == "mse" else loss}
    )
    guard_checkpoint(checkpoint, list(snakemake.input), config.to_dict())
    sae, history = train_orbit_sae(
        latents[train],
        config,
        symmetry if config.family == "equivariant" else None,
        device,
        checkpoint,
    )
    save_sae(sae.cpu(), model_path, {"config": config.to_dict(), "history": history})
    write_json(
        metrics_path,
        {
            "architecture": arch,
            "family": family,
            "loss": loss,
            "name": config.name,
            "num_features": sae.num_features,
            "test": evaluate_orbit_sae(sae, latents[~train]),
            "history": history,
        },
    )
# Checkpoints go only once every SAE is written: a killed job's rerun finds the finished
# SAEs' checkpoints at their last epoch and resumes them without training again.
for checkpoint in params.checkpoints:
    release_checkpoint(checkpoint)
