"""Truncated probes of every task on the base latents or on one SAE's codes."""

import torch

from monoscope.config import from_mapping
from monoscope.equivariant.orbit_data import load_orbit_data
from monoscope.equivariant.orbits import member_mask
from monoscope.equivariant.probes import TruncatedProbeConfig, run_probes
from monoscope.equivariant.saes import encode_orbits, orbit_codes_as_rows
from monoscope.io import atomic_path, load_tensors
from monoscope.logs import setup_logging
from monoscope.sae import load_sae

setup_logging(snakemake.log[0])
# One thread: scikit-learn and XGBoost fit many small models (see the module docs).
torch.set_num_threads(1)
wildcards = snakemake.wildcards
data = load_orbit_data(snakemake.input.data)
latents = load_tensors(snakemake.input.latents)[0]["latents"]
if wildcards.family == "base":
    features = orbit_codes_as_rows(latents)
else:
    sae = load_sae(snakemake.input.sae)
    features = orbit_codes_as_rows(encode_orbits(sae, latents))
results = run_probes(
    features,
    data.labels,
    data.task_names,
    member_mask(data.test_orbits, data.orbit_size),
    from_mapping(TruncatedProbeConfig, snakemake.params.probes),
    family=wildcards.family,
)
invariant = dict(zip(data.task_names, data.invariant, strict=True))
results.insert(0, "architecture", wildcards.arch)
results.insert(2, "loss", wildcards.loss)
results["invariant"] = results["task"].map(invariant)
with atomic_path(snakemake.output.probes) as temporary:
    results.to_csv(temporary, index=False)
