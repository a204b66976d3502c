"""Train a demo network (the subject model, or the judge) on the digits."""

from monoscope.config import from_mapping
from monoscope.data import DataConfig, open_dataset
from monoscope.device import resolve_device
from monoscope.io import write_json
from monoscope.logs import start_job
from monoscope.models.train import TrainConfig, save_demo_model, train_demo_cnn

start_job(snakemake)
data = from_mapping(DataConfig, snakemake.params.data)
train_set = open_dataset(data, snakemake.input.samples, "train")
test_set = open_dataset(data, snakemake.input.samples, "test")
num_labels = int(max(train_set.labels.max(), test_set.labels.max())) + 1
model, metrics = train_demo_cnn(
    train_set,
    test_set,
    from_mapping(TrainConfig, snakemake.params.train),
    num_labels=num_labels,
    device=resolve_device(snakemake.params.device),
)
save_demo_model(model, snakemake.output.model)
write_json(snakemake.output.metrics, metrics | {"seconds": round(metrics["seconds"], 1)})
