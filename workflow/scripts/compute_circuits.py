"""Circuits and activation baselines of one shard of the selected upper channels."""

from monoscope.config import from_mapping
from monoscope.data import DataConfig, open_dataset
from monoscope.device import resolve_device
from monoscope.logs import start_job
from monoscope.models import ModelConfig, load_model
from monoscope.pure.circuits import CircuitConfig, compute_circuits, save_circuits
from monoscope.references import job_channel_shard

start_job(snakemake)
params = snakemake.params
device = resolve_device(params.device)
part = job_channel_shard(snakemake)
dataset = open_dataset(from_mapping(DataConfig, params.data), snakemake.input.samples)
model = load_model(from_mapping(ModelConfig, params.model), device)
circuits = compute_circuits(
    model,
    dataset,
    part.top.sample_ids[part.channels],
    part.channels,
    params.lower_layer,
    params.upper_layer,
    from_mapping(CircuitConfig, params.circuits),
    device,
)
save_circuits(
    snakemake.output.circuits,
    circuits,
    {
        "lower": params.lower_layer,
        "upper": params.upper_layer,
        "reference_mode": params.reference_mode,
        "method": params.circuits["method"],
    }
    | part.metadata(),
)
