"""Probes of one representation under noise: every setting of finetuning (rule
contrastive_finetune) or of both frozen probes (rule contrastive_frozen_probes)."""

from monoscope.config import from_mapping
from monoscope.contrastive.data import (
    ContrastiveDataConfig,
    contrastive_samples,
    load_contrastive_split,
)
from monoscope.contrastive.probes import FinetuneConfig, LinearProbeConfig
from monoscope.contrastive.representations import (
    load_feature_sets,
    load_representation,
    probe_under_noise,
)
from monoscope.device import resolve_device
from monoscope.io import write_json
from monoscope.logs import start_job

start_job(snakemake)
params, wildcards = snakemake.params, snakemake.wildcards
device = resolve_device(params.device)
# Every setting of every probe, in the order of the declared outputs.
cells = [(probe, noise, level) for probe in params.probes for noise, level in params.settings]
paths = list(snakemake.output.probes)
model = load_representation(snakemake.input.model, snakemake.input.get("sae"), device)
features, classes = load_feature_sets(snakemake.input.features)
# Images are read only where a cell needs them: finetuning, and noise on test images.
data = from_mapping(ContrastiveDataConfig, params.data)
finetuning = any(probe == "finetune" for probe, _, _ in cells)
samples = contrastive_samples(snakemake.input)
train_ds = load_contrastive_split(data, True, samples)[0] if finetuning else None
noisy_inputs = any(noise in ("gaussian", "uniform") for _, noise, _ in cells)
test_ds = load_contrastive_split(data, False, samples)[0] if finetuning or noisy_inputs else None
# Each rule passes only its own probes' settings (a change to the others reruns nothing).
options = {}
if "linear" in params.keys():  # contrastive_frozen_probes
    options["probe_config"] = from_mapping(LinearProbeConfig, params.linear)
    options["selected_dims"] = params.selected_dims
if "finetune" in params.keys():  # contrastive_finetune
    options["finetune_config"] = from_mapping(FinetuneConfig, params.finetune)
# Every probe draws from its own generators seeded from the params, so a cell's result
# does not depend on the cells run before it in the job.
for (probe, noise, level), path in zip(cells, paths, strict=True):
    record = probe_under_noise(
        model,
        probe,
        noise,
        float(level),
        train_ds,
        test_ds,
        features["train"],
        features["test"],
        num_classes=len(classes),
        which=params.which,
        batch_size=params.batch_size,
        seed=params.seed,
        device=device,
        **options,
    )
    write_json(path, {"representation": wildcards.representation, **record})
