"""Allowed values are defined once, in the library; the schema and the workflow follow.

The library's registries and tuples (``DATA_SOURCES``, ``MODES``, ``ARCHITECTURES``, ...)
are the source of truth. The config schema (``config/schema.yaml``) repeats them as
enums so that a typo fails before any job starts, and the rules repeat some as wildcard
constraints so that Snakemake matches paths unambiguously. These tests compare both
copies with the library, so that adding, renaming or removing a name in one place and
not in the others fails here, naming the place.
"""

import json
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
import yaml


def library_values() -> dict[str, set]:
    """Schema enum path -> the library's allowed values (imported lazily)."""
    from monoscope import activations, embedders, references, vocabulary
    from monoscope.contrastive import data as contrastive_data
    from monoscope.contrastive import models as contrastive_models
    from monoscope.contrastive import pretrain, probes
    from monoscope.contrastive import representations as contrastive_representations
    from monoscope.data import DATA_SOURCES
    from monoscope.equivariant import autoencoders, orbits, saes, shapes
    from monoscope.equivariant import probes as equivariant_probes
    from monoscope.hierarchy import DISTANCE_KINDS
    from monoscope.models.registry import NORMALIZATIONS
    from monoscope.pure.circuits import CIRCUIT_METHODS
    from monoscope.sae import base as sae_base

    normalize = {"auto", *NORMALIZATIONS}  # auto: the weight file's record decides
    return {
        "data.name": set(DATA_SOURCES),
        "model.normalize": normalize,
        "references.modes.[]": set(references.MODES),
        "references.relmax_target": set(references.RELMAX_TARGETS),
        "circuits.references": set(references.MODES),
        "circuits.method": set(CIRCUIT_METHODS),
        "neurons.by": set(references.NEURON_SCORES),
        "embedders.*.kind": set(embedders.EMBEDDERS),
        "embedders.*.pooling": set(embedders.POOLINGS),
        "embedders.*.normalize": normalize,
        "activations.pooling": set(activations.POOLINGS),
        "labels.source": set(vocabulary.SOURCES),
        "hierarchy.kind": set(DISTANCE_KINDS),
        "contrastive.data.name": set(contrastive_data.CONTRASTIVE_SOURCES),
        "contrastive.methods.[]": set(pretrain.METHODS),
        # SimCLR has no non-negative map ("none"); NCL picks one of the others.
        "contrastive.pretrain.ncl_nonneg": set(contrastive_models.NONNEG_MAPS) - {"none"},
        "contrastive.pretrain.optimizer": set(pretrain.OPTIMIZERS),
        "contrastive.features": set(probes.FEATURE_SOURCES),
        "contrastive.probes.[]": set(contrastive_representations.PROBES),
        "contrastive.linear.optimizer": set(probes.PROBE_OPTIMIZERS),
        "contrastive.hierarchy.kind": set(DISTANCE_KINDS),
        "equivariant.data.orbit_size": set(orbits.ORBIT_SIZES),
        "equivariant.tasks.conjunctions.[].[]": set(shapes.CATEGORICAL_ATTRIBUTES),
        "equivariant.architectures.[]": set(autoencoders.ARCHITECTURES),
        "equivariant.families.[]": set(saes.FAMILIES),
        "equivariant.loss_types.[]": set(saes.LOSS_TYPES),
        "equivariant.sae.encoder_type": set(saes.ENCODER_TYPES),
        "equivariant.probes.probes.[]": set(equivariant_probes.PROBES),
        "equivariant.probes.selection": set(equivariant_probes.SELECTIONS),
        # sae.models trains on activation vectors; the orbit SAEs are the equivariant branch's.
        "#sae_model.variant": set(sae_base.vector_variants()),
        "#sae_model.init": set(sae_base.INIT_METHODS),
        "#sae_model.decoder_bias_init": set(sae_base.DECODER_BIAS_INITS),
    }


# Enums of the workflow itself, with no library counterpart.
WORKFLOW_ENUMS = {
    "branches.[]": "the workflow's branches (rules/common.smk, all_targets)",
    "crops.blur_kernel": "a choice of sizes; the library accepts any positive odd number",
    "neurons": "the keyword 'all' of the neuron selection",
    "equivariant.data.source": "which script path prepare_equivariant_data.py takes",
}


def schema_enums(node, path=()) -> Iterator[tuple[str, list]]:
    """(path, enum) of every enum in a JSON schema; ``[]`` for array items, ``*`` for
    additionalProperties, ``#name`` for a definition."""
    if not isinstance(node, dict):
        return
    if "enum" in node:
        yield ".".join(path), node["enum"]
    for name, sub in node.get("properties", {}).items():
        yield from schema_enums(sub, (*path, name))
    for name, sub in node.get("definitions", {}).items():
        yield from schema_enums(sub, (*path, f"#{name}"))
    yield from schema_enums(node.get("items"), (*path, "[]"))
    yield from schema_enums(node.get("additionalProperties"), (*path, "*"))
    for key in ("oneOf", "anyOf", "allOf"):
        for sub in node.get(key, []):
            yield from schema_enums(sub, path)


@pytest.fixture(scope="module")
def enums(repo) -> dict[str, list]:
    schema = yaml.safe_load((repo / "config" / "schema.yaml").read_text())
    return dict(schema_enums(schema))


def test_every_schema_enum_is_the_librarys(enums):
    library = library_values()
    unclassified = set(enums) - set(library) - set(WORKFLOW_ENUMS)
    assert not unclassified, (
        f"schema enums {sorted(unclassified)} have no library source here: add them to "
        "library_values (or, for a workflow-only choice, WORKFLOW_ENUMS)"
    )
    assert not set(library) - set(enums), f"gone from the schema: {set(library) - set(enums)}"
    drift = {
        path: {"schema": sorted(map(str, enums[path])), "library": sorted(map(str, values))}
        for path, values in library.items()
        if set(enums[path]) != values
    }
    assert not drift, f"config/schema.yaml enums differ from the library: {drift}"


def test_model_name_pattern_lists_the_model_families(repo):
    from monoscope.models.registry import MODEL_FAMILIES

    schema = yaml.safe_load((repo / "config" / "schema.yaml").read_text())
    patterns = [
        schema["properties"]["model"]["properties"]["name"]["pattern"],
        schema["properties"]["embedders"]["additionalProperties"]["properties"]["model"]["pattern"],
    ]
    for pattern in patterns:
        alternatives = re.fullmatch(r"\^\((.*)\)\$", pattern).group(1).split("|")
        families = {re.match(r"[a-z_]+", part).group(0) for part in alternatives}
        assert families == set(MODEL_FAMILIES), pattern


def test_device_pattern_is_the_device_choices(repo):
    from monoscope.device import DEVICE_CHOICES

    schema = yaml.safe_load((repo / "config" / "schema.yaml").read_text())
    pattern = schema["properties"]["device"]["pattern"]
    assert all(re.fullmatch(pattern, choice) for choice in DEVICE_CHOICES)
    assert set(re.findall(r"[a-z]+", pattern)) == set(DEVICE_CHOICES)


# Loads the workflow (default config) without running it and prints its constraints.
CONSTRAINTS = r"""
import json
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

def pattern(value):
    value = value[0] if isinstance(value, tuple) else value
    return getattr(value, "pattern", value)

with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(cores=1),
        config_settings=ConfigSettings(),
        snakefile=Path("Snakefile"),
        workdir=Path("."),
    )._workflow
    found = {"*": {k: pattern(v) for k, v in workflow.wildcard_constraints.items()}}
    for rule in workflow.rules:
        found[rule.name] = {k: pattern(v) for k, v in rule.wildcard_constraints.items()}
print("CONSTRAINTS " + json.dumps(found))
"""


@pytest.fixture(scope="module")
def constraints(repo) -> dict[str, dict[str, str]]:
    """Wildcard constraints of the default workflow: ``"*"`` global, else by rule."""
    result = subprocess.run(
        [sys.executable, "-c", CONSTRAINTS],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = next(
        (line for line in result.stdout.splitlines() if line.startswith("CONSTRAINTS ")), None
    )
    assert line, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(line.removeprefix("CONSTRAINTS "))


def alternatives(pattern: str) -> set[str]:
    assert re.fullmatch(r"\w+(\|\w+)*", pattern), f"not a list of names: {pattern}"
    return set(pattern.split("|"))


def test_wildcard_constraints_are_the_librarys(constraints):
    from monoscope.contrastive.pretrain import METHODS
    from monoscope.contrastive.representations import NOISES, PROBES, REPRESENTATIONS
    from monoscope.equivariant.autoencoders import ARCHITECTURES
    from monoscope.equivariant.saes import FAMILIES, LOSS_TYPES, PLAIN_LOSS
    from monoscope.equivariant.tables import FAMILY_ORDER
    from monoscope.references import MODES
    from monoscope.weights import WEIGHT_SOURCES

    # "base" is the autoencoder's own latents, probed with loss "none"; the families but
    # the equivariant one train with the plain loss.
    assert FAMILY_ORDER == ("base", *FAMILIES)
    expected = {
        ("*", "mode"): set(MODES),
        ("*", "representation"): set(REPRESENTATIONS),
        ("*", "probe"): set(PROBES),
        ("*", "noise"): set(NOISES),
        ("*", "arch"): set(ARCHITECTURES),
        ("*", "family"): set(FAMILY_ORDER),
        ("*", "loss"): {"none", PLAIN_LOSS, *LOSS_TYPES},
        ("pretrain_contrastive", "method"): set(METHODS),
        ("import_weights", "weights_name"): {
            source.default_out.removeprefix("weights/").removesuffix(".safetensors")
            for source in WEIGHT_SOURCES.values()
        },
    }
    found = {
        key: alternatives(constraints[key[0]][key[1]])
        for key in expected
        if key[1] in constraints.get(key[0], {})
    }
    assert found.keys() == expected.keys(), (
        f"constraints not found: {expected.keys() - found.keys()}"
    )
    drift = {
        key: (sorted(found[key]), sorted(expected[key]))
        for key in expected
        if found[key] != expected[key]
    }
    assert not drift, f"wildcard constraints (rules, library) differ: {drift}"


def test_every_constraint_naming_values_is_checked(constraints):
    """A constraint that lists names must be one the test above compares."""
    checked = {
        "mode",
        "representation",
        "probe",
        "noise",
        "arch",
        "family",
        "loss",
        "method",
        "weights_name",
    }
    listing = {
        (rule, name)
        for rule, patterns in constraints.items()
        for name, pattern in patterns.items()
        if re.fullmatch(r"\w+(\|\w+)+", pattern)
    }
    assert {name for _, name in listing} <= checked, sorted(listing)
