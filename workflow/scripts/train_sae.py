"""Train one SAE on one layer's pooled activations (training split), resumably."""

from monoscope.activations import ActivationStore
from monoscope.config import from_mapping
from monoscope.device import resolve_device
from monoscope.io import guard_checkpoint, release_checkpoint, write_json
from monoscope.logs import start_job
from monoscope.sae import SAEConfig, save_sae, train_sae

start_job(snakemake)
store = ActivationStore(snakemake.input.activations, split="train")
config = from_mapping(SAEConfig, snakemake.params.sae)
checkpoint = snakemake.params.checkpoint
# A checkpoint of an interrupted run resumes; one written for other activations or
# options is stale (this job reruns because they changed) and is discarded.
guard_checkpoint(checkpoint, list(snakemake.input.activations), dict(snakemake.params.sae))
sae, history = train_sae(store, config, resolve_device(snakemake.params.device), checkpoint)
record = {"config": dict(snakemake.params.sae), "history": history}
save_sae(sae.cpu(), snakemake.output.model, record)
write_json(snakemake.output.history, record)
release_checkpoint(checkpoint)  # the outputs are complete: nothing left to resume
