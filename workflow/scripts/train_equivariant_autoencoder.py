"""Train one base autoencoder (the arch wildcard) on the training orbits, resumably."""

from monoscope.device import resolve_device
from monoscope.equivariant.autoencoders import (
    AutoencoderConfig,
    save_autoencoder,
    train_autoencoder,
)
from monoscope.equivariant.orbit_data import load_orbit_data
from monoscope.io import guard_checkpoint, release_checkpoint, write_json
from monoscope.logs import start_job

start_job(snakemake)
data = load_orbit_data(snakemake.input.data)
config = AutoencoderConfig.from_dict(
    {**snakemake.params.autoencoder, "architecture": snakemake.wildcards.arch}
)
checkpoint = snakemake.params.checkpoint
guard_checkpoint(checkpoint, list(snakemake.input), config.to_dict())
# Canonical images only: the rotation augmentation supplies the other members.
images = data.canonical_float(~data.test_orbits)
model, history = train_autoencoder(
    images, config, resolve_device(snakemake.params.device), checkpoint
)
save_autoencoder(snakemake.output.model, model.cpu(), config, history)
write_json(snakemake.output.history, {"config": config.to_dict(), "history": history})
release_checkpoint(checkpoint)
