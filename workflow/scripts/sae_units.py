"""SAE features as units: their top-N references over the whole data set, and the
SAE's metrics (L0, dead and dense fractions, FVU on the test split; the model's
accuracy with the SAE spliced in)."""

import torch

from monoscope.activations import ActivationStore
from monoscope.config import from_mapping
from monoscope.data import DataConfig, open_dataset
from monoscope.device import resolve_device
from monoscope.io import write_json
from monoscope.logs import start_job
from monoscope.models import ModelConfig, load_model
from monoscope.references import save_references
from monoscope.sae import evaluate_sae, load_sae
from monoscope.units import SAEFeatures, spliced_accuracy

start_job(snakemake)
params = snakemake.params
device = resolve_device(params.device)
layer = snakemake.wildcards.layer
sae = load_sae(snakemake.input.sae).to(device).eval()
paths = snakemake.input.activations
metrics = evaluate_sae(sae, ActivationStore(paths, split="test"), params.batch_size)
everything = ActivationStore(paths, split="all")
features = SAEFeatures(None, layer, sae, snakemake.wildcards.sae)
top = features.references(everything, params.n, params.batch_size)
# A feature fired somewhere iff its best reference has a positive code (one pass, not
# two); dead features have no references.
units = torch.nonzero(top.scores[:, 0] > 0).flatten().tolist()
if params.max_units:
    units = units[: params.max_units]
model = load_model(from_mapping(ModelConfig, params.model), device)
test_set = open_dataset(from_mapping(DataConfig, params.data), snakemake.input.samples, "test")
metrics |= spliced_accuracy(model, test_set, layer, sae, params.pooling, device)
metrics |= {"units": units, "alive": len(units), "features": sae.num_features, "layer": layer}
save_references(
    snakemake.output.references,
    {("sae", layer): top},
    metadata={"units": units, "sae": snakemake.wildcards.sae, "n": params.n},
)
write_json(snakemake.output.metrics, metrics)
