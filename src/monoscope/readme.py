"""The README's demo figures, quoted from the run that made them, never typed.

Each quoted table stands between two markers naming its file::

    <!-- generated: tables/purity.md (make readme refreshes it) -->
    ...the file's text...
    <!-- end of tables/purity.md -->

``python -m monoscope.readme results/demo`` rewrites every quoted block from the run's
tables; ``--check`` only reports the blocks that differ (exit status 1), which is what
``make demo`` and the drift test run; ``--summary`` prints where the report is and the
demo's headline numbers.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

BEGIN = "<!-- generated: tables/{name}.md (make readme refreshes it) -->"
END = "<!-- end of tables/{name}.md -->"
_BLOCK = re.compile(
    r"<!-- generated: tables/(?P<name>[\w.-]+)\.md \(make readme refreshes it\) -->\n"
    r"(?P<body>.*?)"
    r"<!-- end of tables/(?P=name)\.md -->",
    re.DOTALL,
)


def quoted_tables(text: str) -> dict[str, str]:
    """Table name -> the text quoted for it (without the markers)."""
    return {match["name"]: match["body"] for match in _BLOCK.finditer(text)}


def _table_text(tables: Path, name: str) -> str:
    path = tables / f"{name}.md"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run make demo first")
    return path.read_text(encoding="utf-8").rstrip("\n") + "\n"


def stale_tables(text: str, tables: str | Path) -> list[str]:
    """Names of the quoted tables whose text differs from ``tables/<name>.md``."""
    tables = Path(tables)
    return [name for name, body in quoted_tables(text).items() if body != _table_text(tables, name)]


def refresh(text: str, tables: str | Path) -> str:
    """``text`` with every quoted table replaced by the current file's text."""
    tables = Path(tables)

    def replace(match: re.Match) -> str:
        name = match["name"]
        return BEGIN.format(name=name) + "\n" + _table_text(tables, name) + END.format(name=name)

    return _BLOCK.sub(replace, text)


def headline(results: str | Path) -> list[str]:
    """The demo's headline numbers, read from its tables (one line each)."""
    tables = Path(results) / "tables"
    lines = []
    purity = pd.read_csv(tables / "purity.csv", index_col=0, dtype=str)
    k = purity.columns[0]
    lines.append(
        f"purity ({k}): neurons {purity.loc['neurons (unsplit)', k]}, "
        f"PURE virtual neurons {purity.loc['pure', k]}"
    )
    alignment = pd.read_csv(tables / "alignment.csv", index_col=0, dtype=str)
    lines.append(
        "alignment with the reference embedder (Pearson): circuits "
        f"{alignment.loc['circuits (PURE)', 'pearson']}, activations "
        f"{alignment.loc['activations', 'pearson']}"
    )
    contrastive = tables / "contrastive_representations.csv"
    if contrastive.is_file():
        frame = pd.read_csv(contrastive, index_col=0, dtype=str)
        column = "class consistency"
        values = ", ".join(f"{row} {frame.loc[row, column]}" for row in frame.index)
        lines.append(f"{column}: {values}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monoscope.readme", description=__doc__)
    parser.add_argument("results", help="the experiment's results folder, e.g. results/demo")
    parser.add_argument("--readme", default="README.md", help="the file that quotes tables")
    parser.add_argument("--check", action="store_true", help="report stale blocks only")
    parser.add_argument("--summary", action="store_true", help="print the headline numbers")
    options = parser.parse_args(argv)
    results, readme = Path(options.results), Path(options.readme)
    if options.summary:
        print(
            f"monoscope: the report is {results / 'report.zip'} (unzip it, open report.html); "
            f"tables in {results / 'tables'}"
        )
        atlas = results / "atlas" / "index.html"
        if atlas.is_file():
            print(f"  the unit atlas: {atlas} (open it in a browser; no server needed)")
        for line in headline(results):
            print(f"  {line}")
    text = readme.read_text(encoding="utf-8")
    stale = stale_tables(text, results / "tables")
    if options.check or options.summary:
        if stale:
            print(
                f"{readme} quotes tables that differ from this run ({', '.join(stale)}): "
                f"python -m monoscope.readme {results} rewrites them"
            )
            return 1
        print(f"{readme} quotes this run's tables ({len(quoted_tables(text))} of them)")
        return 0
    readme.write_text(refresh(text, results / "tables"), encoding="utf-8")
    print(f"{readme}: {len(stale)} of {len(quoted_tables(text))} quoted tables refreshed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
