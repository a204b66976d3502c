"""The config schema: defaults filled in, every wrong key, type or value named."""

import copy
import subprocess
import sys

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


@pytest.fixture(scope="module")
def schema(repo):
    return str(repo / "config" / "schema.yaml")


@pytest.fixture()
def default_config(repo):
    return yaml.safe_load((repo / "config" / "config.yaml").read_text())


def test_default_config_is_valid_and_gets_defaults(schema, default_config):
    validate(default_config, schema, set_default=True)
    assert default_config["references"]["relmax_target"] == "label"
    assert default_config["references"]["layers"] is None
    assert default_config["data"]["max_samples"] is None
    assert default_config["demo"]["judge"]["epochs"] == 8  # the file's value survives defaults


def test_empty_config_gets_every_default(schema):
    config = {}
    validate(config, schema, set_default=True)
    assert config["model"]["name"] == "demo_cnn"
    assert config["references"]["shards"] == 2
    assert config["references"]["grid"]["channels"] == 8


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda c: c.update(refrences={"n": 3}), "refrences"),
        (lambda c: c["references"].update(nn=3), "nn"),
        (lambda c: c["references"]["grid"].update(colums=3), "colums"),
        (lambda c: c["references"].update(n="ten"), "ten"),
        (lambda c: c["references"].update(n=0), "n"),
        (lambda c: c["references"].update(modes=["maxact"]), "maxact"),
        (lambda c: c["data"].update(name="cifar"), "cifar"),
        (lambda c: c["model"].update(name="keras:resnet"), "keras:resnet"),
        (lambda c: c.update(device="gpu"), "gpu"),
        (lambda c: c["demo"].update(widths=[1, 2]), "widths"),
    ],
)
def test_wrong_key_type_or_value_is_named(schema, default_config, change, named):
    config = copy.deepcopy(default_config)
    change(config)
    with pytest.raises(WorkflowError) as error:
        validate(config, schema, set_default=True)
    assert named in str(error.value)


def test_typo_fails_before_the_dag_in_one_line(repo, tmp_path):
    """A typo stops Snakemake while the Snakefile is read (no DAG, no job), and the
    message is one line naming the key, not the ~1,800 lines of the failing schema."""
    typo = tmp_path / "typo.yaml"
    typo.write_text("references:\n  n_refs: 10\n")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(typo)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "config key references: Additional properties are not allowed ('n_refs'" in output
    assert "Building DAG" not in output and "additionalProperties" not in output
    assert len(output.splitlines()) < 15, output
