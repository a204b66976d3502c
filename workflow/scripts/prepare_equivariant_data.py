"""The equivariant branch's data set: canonical images, per-member task labels, the split."""

from monoscope.equivariant.orbit_data import image_orbit_data, save_orbit_data, shapes_orbit_data
from monoscope.equivariant.shapes import ShapesConfig
from monoscope.equivariant.tasks import TaskConfig
from monoscope.io import write_json
from monoscope.logs import setup_logging

setup_logging(snakemake.log[0])
options = snakemake.params.data
if options["source"] == "shapes":
    shapes = ShapesConfig(
        num_orbits=options["num_orbits"],
        image_size=options["image_size"],
        orbit_size=options["orbit_size"],
        min_size=options["min_size"],
        max_size=options["max_size"],
        canonical_orientation=options["canonical_orientation"],
        seed=options["seed"],
    )
    data = shapes_orbit_data(
        shapes,
        TaskConfig.from_dict(snakemake.params.tasks),
        options["test_fraction"],
        options["seed"],
    )
else:
    data = image_orbit_data(
        options["root"],
        options["image_size"],
        options["orbit_size"],
        options["test_fraction"],
        options["seed"],
    )
save_orbit_data(snakemake.output.data, data)
write_json(
    snakemake.output.tasks,
    {
        "source": data.source,
        "orbits": data.num_orbits,
        "test_orbits": int(data.test_orbits.sum()),
        "orbit_size": data.orbit_size,
        "tasks": [
            {"name": name, "invariant": invariant, "positive_rate": float(rate)}
            for name, invariant, rate in zip(
                data.task_names, data.invariant, data.labels.mean(axis=0), strict=True
            )
        ],
    },
)
