"""Pretrain one contrastive model (the method wildcard: simclr or ncl), resumably."""

import logging
from pathlib import Path

import torch

from monoscope.config import from_mapping
from monoscope.contrastive.data import ContrastiveDataConfig, load_contrastive_split
from monoscope.contrastive.pretrain import (
    PretrainConfig,
    checkpoint_resumable,
    pretrain,
    save_pretrained,
)
from monoscope.device import resolve_device
from monoscope.io import write_json
from monoscope.logs import setup_logging

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
method = snakemake.wildcards.method
settings = dict(snakemake.params.pretrain)
nonneg = settings.pop("ncl_nonneg") if method == "ncl" else "none"
settings.pop("ncl_nonneg", None)
config = from_mapping(PretrainConfig, settings, method=method, nonneg=nonneg)
train_ds, _ = load_contrastive_split(
    from_mapping(ContrastiveDataConfig, snakemake.params.data), True
)
checkpoint = Path(snakemake.params.checkpoint)
if checkpoint.exists() and not checkpoint_resumable(checkpoint, config):
    logging.getLogger("pretrain_contrastive").warning("discarding stale checkpoint %s", checkpoint)
    checkpoint.unlink()
model, history = pretrain(train_ds, config, resolve_device(snakemake.params.device), checkpoint)
save_pretrained(snakemake.output.model, model.cpu(), config, history)
write_json(snakemake.output.history, {"config": config.to_dict(), "history": history})
checkpoint.unlink(missing_ok=True)  # the outputs are complete: nothing left to resume
