"""Train one SAE on one layer's pooled activations (training split), resumably."""

import logging
from pathlib import Path

import torch

from monoscope.activations import ActivationStore
from monoscope.config import from_mapping
from monoscope.device import resolve_device
from monoscope.io import write_json
from monoscope.logs import setup_logging
from monoscope.sae import SAEConfig, checkpoint_resumable, save_sae, train_sae

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
store = ActivationStore(snakemake.input, split="train")
config = from_mapping(SAEConfig, snakemake.params.sae)
checkpoint = Path(snakemake.params.checkpoint)
# A checkpoint of an interrupted run resumes; one written with other options is stale
# (this job reruns because the options changed) and is discarded.
if checkpoint.exists() and not checkpoint_resumable(checkpoint, config):
    logging.getLogger("train_sae").warning("discarding stale checkpoint %s", checkpoint)
    checkpoint.unlink()
sae, history = train_sae(store, config, resolve_device(snakemake.params.device), checkpoint)
save_sae(sae.cpu(), snakemake.output.model)
write_json(snakemake.output.history, {"config": dict(snakemake.params.sae), "history": history})
checkpoint.unlink(missing_ok=True)  # the outputs are complete: nothing left to resume
