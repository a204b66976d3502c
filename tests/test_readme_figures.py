"""README figures come from runs: the quoted generated blocks must equal their files."""

import sys

import pytest

BENCHMARK_TABLES = ("scale.md", "references.md", "circuits.md", "branches.md", "startup.md")


def test_readme_quotes_the_generated_benchmark_tables(repo):
    sys.path.insert(0, str(repo / "benchmarks"))
    try:
        from readme_quote import readme_markers
    finally:
        sys.path.pop(0)
    readme = (repo / "README.md").read_text()
    generated = sorted((repo / "benchmarks" / "results").glob("*.md"))
    missing = set(BENCHMARK_TABLES) - {path.name for path in generated}
    if missing:
        pytest.fail(
            f"benchmarks/results/ lacks {sorted(missing)}: run make bench (and bench-scale)"
        )
    for path in generated:
        begin, end = readme_markers(path.name)
        assert begin in readme, f"README.md does not quote {path.name}"
        quoted = readme.split(begin, 1)[1].split(end, 1)[0].strip()
        assert quoted == path.read_text().strip(), (
            f"README.md's copy of {path.name} is stale: run make bench (or bench-scale), "
            "which quotes it again"
        )


# --------------------------------------------------------------------------- demo tables

DEMO_TABLES = (
    "purity",
    "semantic_distances",
    "alignment",
    "stability",
    "units",
    "sae",
    "labels",
    "atlas",
    "contrastive_representations",
    "contrastive_robustness",
    "equivariant_probes",
    "equivariant_reconstruction",
    "equivariant_symmetry",
)


def quote(name, body):
    from monoscope.readme import BEGIN, END

    return f"{BEGIN.format(name=name)}\n{body}{END.format(name=name)}"


def test_stale_quotes_are_found_and_refreshed(tmp_path):
    from monoscope.readme import quoted_tables, refresh, stale_tables

    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "purity.md").write_text("Caption.\n\n| a |\n|---|\n| 0.9 |\n")
    (tables / "alignment.md").write_text("| b |\n")
    old = "| a |\n|---|\n| 0.5 |\n"
    text = "intro\n" + quote("purity", old) + "\nmiddle\n"
    text += quote("alignment", "| b |\n") + "\nend\n"
    assert stale_tables(text, tables) == ["purity"]
    refreshed = refresh(text, tables)
    assert stale_tables(refreshed, tables) == []
    assert quoted_tables(refreshed)["purity"] == (tables / "purity.md").read_text()
    assert refreshed.startswith("intro\n") and refreshed.endswith("\nend\n")
    (tables / "alignment.md").unlink()
    with pytest.raises(FileNotFoundError, match="alignment.md is missing: run make demo"):
        stale_tables(refreshed, tables)


def test_readme_quotes_every_demo_table(repo):
    from monoscope.readme import quoted_tables

    readme = (repo / "README.md").read_text()
    assert set(quoted_tables(readme)) == set(DEMO_TABLES)


@pytest.mark.workflow
def test_readme_demo_tables_equal_the_last_demo_run(repo):
    """The drift check: after `make demo`, the README quotes exactly the run's tables."""
    from monoscope.readme import stale_tables

    tables = repo / "results" / "demo" / "tables"
    if not tables.is_dir():
        pytest.skip("no results/demo/tables: run make demo, then this test compares them")
    stale = stale_tables((repo / "README.md").read_text(), tables)
    assert not stale, f"README.md quotes stale demo tables {stale}: run make readme"
