"""README figures come from runs: the quoted generated blocks must equal their files."""

import sys

import pytest


def test_readme_quotes_the_generated_scale_profiles(repo):
    sys.path.insert(0, str(repo / "benchmarks"))
    try:
        from bench_scale import readme_markers
    finally:
        sys.path.pop(0)
    readme = (repo / "README.md").read_text()
    generated = sorted((repo / "benchmarks" / "results").glob("scale*.md"))
    if not generated:
        pytest.fail("benchmarks/results/scale.md is missing: run make bench-scale")
    for path in generated:
        begin, end = readme_markers(path.name)
        assert begin in readme, f"README.md does not quote {path.name}"
        quoted = readme.split(begin, 1)[1].split(end, 1)[0].strip()
        assert quoted == path.read_text().strip(), (
            f"README.md's copy of {path.name} is stale: run make bench-scale (or "
            "python benchmarks/bench_scale.py --readme) to refresh it"
        )
