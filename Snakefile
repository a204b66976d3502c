# monoscope: one DAG from images to the tables of a paper. See README.md.
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


# Fails before any job starts, naming the offending key in one line; fills in the defaults.
try:
    validate(config, "config/schema.yaml", set_default=True)
except WorkflowError as error:
    from monoscope.preflight import schema_error_summary

    raise WorkflowError(schema_error_summary(error)) from None


report: "workflow/report/workflow.rst"


scattergather:
    references=config["references"]["shards"],
    circuits=config["circuits"]["shards"],
    crops=config["crops"]["shards"],
    activations=config["activations"]["shards"],


include: "rules/common.smk"
include: "rules/helpers/pure.smk"
include: "rules/helpers/sae.smk"
include: "rules/helpers/contrastive.smk"
include: "rules/helpers/equivariant.smk"
include: "rules/helpers/atlas.smk"
include: "rules/imports.smk"
include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/references.smk"
include: "rules/circuits.smk"
include: "rules/clustering.smk"
include: "rules/crops.smk"
include: "rules/sae.smk"
include: "rules/contrastive.smk"
include: "rules/equivariant.smk"
include: "rules/evaluation.smk"
include: "rules/atlas.smk"


rule all:
    default_target: True
    input:
        all_targets(),


onstart:
    start_job_server()


onsuccess:
    stop_job_server()


onerror:
    stop_job_server()
