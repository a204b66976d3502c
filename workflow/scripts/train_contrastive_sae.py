"""Train the TopK SAE on the L2-normalised projector output of the frozen SimCLR model."""

import torch.nn.functional as F

from monoscope.config import from_mapping
from monoscope.contrastive.data import (
    ContrastiveDataConfig,
    contrastive_samples,
    load_contrastive_split,
)
from monoscope.contrastive.pretrain import load_pretrained
from monoscope.contrastive.probes import extract_features
from monoscope.contrastive.representations import contrastive_sae_config
from monoscope.device import resolve_device
from monoscope.io import guard_checkpoint, release_checkpoint, write_json
from monoscope.logs import start_job
from monoscope.sae import save_sae, train_sae
from monoscope.sae.store import TensorStore

start_job(snakemake)
device = resolve_device(snakemake.params.device)
model, _, _ = load_pretrained(snakemake.input.model, device)
train_ds, _ = load_contrastive_split(
    from_mapping(ContrastiveDataConfig, snakemake.params.data),
    True,
    contrastive_samples(snakemake.input),
)
# The SAE's data set is N x 256 (CIFAR) or N x 2048 (ImageNet-100) floats: at most
# 1 GB for ImageNet-100's 126,689 training images, so it is held in memory.
embeddings = extract_features(model, train_ds, "projector", snakemake.params.batch_size).features
store = TensorStore(F.normalize(embeddings, dim=1))
settings = dict(snakemake.params.sae)
config = contrastive_sae_config(settings, store.dim)
checkpoint = snakemake.params.checkpoint
# Stale when the SimCLR model was retrained or the options changed.
guard_checkpoint(checkpoint, [snakemake.input.model], settings)
sae, history = train_sae(store, config, device, checkpoint)
record = {"config": settings, "history": history}
save_sae(sae.cpu(), snakemake.output.model, record)
write_json(snakemake.output.history, record)
release_checkpoint(checkpoint)
