"""Truncated probes of every task on one architecture's base latents and on each of its
SAEs' codes, one CSV each."""

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
arch = snakemake.wildcards.arch
data = load_orbit_data(snakemake.input.data)
latents = load_tensors(snakemake.input.latents)[0]["latents"]
config = from_mapping(TruncatedProbeConfig, snakemake.params.probes)
invariant = dict(zip(data.task_names, data.invariant, strict=True))
test_rows = member_mask(data.test_orbits, data.orbit_size)
saes = iter(snakemake.input.saes)  # in the order of the SAEs among the probed
for (family, loss), path in zip(snakemake.params.probed, snakemake.output.probes, strict=True):
    codes = latents if family == "base" else encode_orbits(load_sae(next(saes)), latents)
    results = run_probes(
        orbit_codes_as_rows(codes), data.labels, data.task_names, test_rows, config, family=family
    )
    results.insert(0, "architecture", arch)
    results.insert(2, "loss", loss)
    results["invariant"] = results["task"].map(invariant)
    with atomic_path(path) as temporary:
        results.to_csv(temporary, index=False)
