"""Pretrain one contrastive model (the method wildcard: simclr or ncl), resumably."""

from monoscope.config import from_mapping
from monoscope.contrastive.data import (
    ContrastiveDataConfig,
    contrastive_samples,
    load_contrastive_split,
)
from monoscope.contrastive.pretrain import (
    PretrainConfig,
    pretrain,
    save_pretrained,
)
from monoscope.device import resolve_device
from monoscope.io import guard_checkpoint, release_checkpoint, write_json
from monoscope.logs import start_job

start_job(snakemake)
method = snakemake.wildcards.method
settings = dict(snakemake.params.pretrain)
nonneg = settings.pop("ncl_nonneg") if method == "ncl" else "none"
settings.pop("ncl_nonneg", None)
config = from_mapping(PretrainConfig, settings, method=method, nonneg=nonneg)
train_ds, _ = load_contrastive_split(
    from_mapping(ContrastiveDataConfig, snakemake.params.data),
    True,
    contrastive_samples(snakemake.input),
)
checkpoint = snakemake.params.checkpoint
guard_checkpoint(
    checkpoint, [], {"data": dict(snakemake.params.data), "pretrain": config.to_dict()}
)
model, history = pretrain(train_ds, config, resolve_device(snakemake.params.device), checkpoint)
save_pretrained(snakemake.output.model, model.cpu(), config, history)
write_json(snakemake.output.history, {"config": config.to_dict(), "history": history})
release_checkpoint(checkpoint)  # the outputs are complete: nothing left to resume
