"""One cell of the robustness sweep: a probe on a representation in one noise setting."""


from monoscope.config import from_mapping
from monoscope.contrastive.data import ContrastiveDataConfig, load_contrastive_split
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
device = resolve_device(snakemake.params.device)
wildcards = snakemake.wildcards
model = load_representation(snakemake.input.model, snakemake.input.get("sae"), device)
features, classes = load_feature_sets(snakemake.input.features)
# Images are read only where the cell needs them: finetuning, and noise on test images.
data = from_mapping(ContrastiveDataConfig, snakemake.params.data)
finetuning = wildcards.probe == "finetune"
train_ds = load_contrastive_split(data, True)[0] if finetuning else None
noisy_inputs = wildcards.noise in ("gaussian", "uniform")
test_ds = load_contrastive_split(data, False)[0] if finetuning or noisy_inputs else None
record = probe_under_noise(
    model,
    wildcards.probe,
    wildcards.noise,
    float(wildcards.level),
    train_ds,
    test_ds,
    features["train"],
    features["test"],
    num_classes=len(classes),
    probe_config=from_mapping(LinearProbeConfig, snakemake.params.linear),
    finetune_config=from_mapping(FinetuneConfig, snakemake.params.finetune),
    selected_dims=snakemake.params.selected_dims,
    which=snakemake.params.which,
    batch_size=snakemake.params.batch_size,
    seed=snakemake.params.seed,
    device=device,
)
write_json(snakemake.output.probes, {"representation": wildcards.representation, **record})
