"""Benchmark tables in the README, quoted from the files a benchmark run writes.

``python benchmarks/readme_quote.py results/bench/references.md ...`` copies each file to
``benchmarks/results/`` (committed) and replaces README.md's quoted copy of it, between
its markers; ``tests/test_readme_figures.py`` fails when a quote differs from its file.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def readme_markers(name: str) -> tuple[str, str]:
    return f"<!-- generated from benchmarks/results/{name}: do not edit -->", "<!-- end -->"


def quote_in_readme(path: Path, readme: Path = REPO / "README.md") -> None:
    """Replace README.md's quoted copy of ``path`` (between its markers) by the file."""
    begin, end = readme_markers(path.name)
    text = readme.read_text()
    if begin not in text:
        raise SystemExit(f"README.md has no block '{begin}' to refresh")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{path.read_text().rstrip()}\n{end}{tail}")


def publish(source: Path) -> Path:
    """Copy a benchmark's Markdown into benchmarks/results/ and quote it in README.md."""
    RESULTS.mkdir(exist_ok=True)
    target = RESULTS / source.name
    if source.resolve() != target.resolve():
        shutil.copyfile(source, target)
    quote_in_readme(target)
    return target


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"quoted {publish(Path(name))} in README.md")
