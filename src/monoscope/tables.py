"""Paper-style tables: ``mean ± se`` cells, wide layouts, and CSV, Markdown and LaTeX files.

A table is a :class:`pandas.DataFrame`. :func:`write_table` writes it three ways next to
each other: CSV for machines (the frame as is), a Markdown pipe table for reading and
reports, and a LaTeX ``table`` environment with booktabs rules for the paper. Every file
is written atomically (:func:`monoscope.io.atomic_path`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from monoscope.io import atomic_path

MISSING = "–"
"""Shown for a missing or NaN value (an en dash)."""

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "±": r"$\pm$",
    "–": "--",
    "—": "---",
    "−": "$-$",
}


def _is_missing(value) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
        return math.isnan(value)
    return False


def format_mean_se(mean, se, digits: int = 3) -> str:
    """``"5.850 ± 0.012"``: a mean and its standard error with ``digits`` decimals.

    A NaN or None mean gives ``"–"``; a NaN or None standard error (one value only)
    gives the mean alone.
    """
    if _is_missing(mean):
        return MISSING
    if _is_missing(se):
        return f"{float(mean):.{digits}f}"
    return f"{float(mean):.{digits}f} ± {float(se):.{digits}f}"


def _cell(value) -> str:
    """Text of one cell: NaN as ``–``, floats with four significant digits."""
    if _is_missing(value):
        return MISSING
    if isinstance(value, bool | np.bool_ | numbers.Integral):
        return str(value)
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}"
    return str(value)


def _label(value) -> str:
    """Text of a row or column label (a tuple of a MultiIndex joined by spaces)."""
    if isinstance(value, tuple):
        return " ".join(_label(part) for part in value)
    return "" if value is None else _cell(value)


def _shows_index(frame: pd.DataFrame) -> bool:
    """Whether the index means something (named, or not just ``0 .. n-1``)."""
    index = frame.index
    if any(name is not None for name in index.names):
        return True
    return not (isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1)


def _grid(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows of cell texts, the index first where it means something."""
    header = [_label(column) for column in frame.columns]
    rows = [[_cell(value) for value in row] for row in frame.itertuples(index=False, name=None)]
    if _shows_index(frame):
        names = [name for name in frame.index.names if name is not None]
        header = [" ".join(str(name) for name in names), *header]
        rows = [[_label(key), *row] for key, row in zip(frame.index, rows, strict=True)]
    return header, rows


def _markdown_cell(text: str) -> str:
    return text.replace("\n", " ").replace("|", r"\|")


def to_markdown(frame: pd.DataFrame, caption: str) -> str:
    """A pipe table with ``Table: <caption>`` (pandoc's caption syntax) on a line above it.

    The index column, where shown, is left-aligned, the other columns right-aligned.
    """
    header, rows = _grid(frame)
    index_columns = len(header) - len(frame.columns)
    rule = [":---"] * index_columns + ["---:"] * len(frame.columns)
    lines = [f"Table: {caption}", ""]
    for row in (header, rule, *rows):
        lines.append("| " + " | ".join(_markdown_cell(text) for text in row) + " |")
    return "\n".join(lines) + "\n"


def escape_latex(text: str) -> str:
    """Escape LaTeX specials (``\\ & % $ # _ { } ~ ^ < >``); ``±`` becomes ``$\\pm$``."""
    return "".join(_LATEX_SPECIALS.get(character, character) for character in str(text))


def to_latex(frame: pd.DataFrame, caption: str, label: str | None = None) -> str:
    """A LaTeX ``table`` environment with booktabs rules (needs ``\\usepackage{booktabs}``)."""
    header, rows = _grid(frame)
    index_columns = len(header) - len(frame.columns)
    spec = "l" * index_columns + "r" * len(frame.columns)
    lines = [
        r"\begin{table}[t]",
        r"  \centering",
        rf"  \caption{{{escape_latex(caption)}}}",
    ]
    if label:
        lines.append(rf"  \label{{{label}}}")
    lines += [
        rf"  \begin{{tabular}}{{{spec}}}",
        r"    \toprule",
        "    " + " & ".join(escape_latex(text) for text in header) + r" \\",
        r"    \midrule",
    ]
    lines += ["    " + " & ".join(escape_latex(text) for text in row) + r" \\" for row in rows]
    lines += [r"    \bottomrule", r"  \end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


TABLE_SUFFIXES = (".csv", ".md", ".tex")
"""The files of one table, in the order :func:`write_table` writes and returns them."""


def table_files(stem: str | Path) -> list[Path]:
    """The CSV, Markdown and LaTeX files :func:`write_table` writes for ``stem``."""
    stem = Path(stem)
    return [stem.with_name(f"{stem.name}{suffix}") for suffix in TABLE_SUFFIXES]


def table_stem(files: Iterable[str | Path]) -> Path:
    """The stem whose :func:`table_files` are exactly ``files`` (in any order).

    A workflow rule declares each table as one named output of three files; its script
    writes the table to ``table_stem(snakemake.output.<name>)``, so it writes only the
    declared files. A ``ValueError`` names the files when they are not one table's.
    """
    paths = [Path(path) for path in files]
    stems = {path.with_name(path.name.removesuffix(path.suffix)) for path in paths}
    if len(stems) != 1 or sorted(map(str, paths)) != sorted(map(str, table_files(*stems))):
        raise ValueError(
            f"expected one table's files <stem>{', <stem>'.join(TABLE_SUFFIXES)}, "
            f"got {[str(path) for path in paths]}"
        )
    return stems.pop()


def write_table(
    frame: pd.DataFrame, stem: str | Path, caption: str, label: str | None = None
) -> list[Path]:
    """Write a table as ``<stem>.csv``, ``<stem>.md`` and ``<stem>.tex``.

    Parameters
    ----------
    frame : the table; cells may be numbers or text such as :func:`format_mean_se` gives.
    stem : path without suffix; the suffixes are appended (``"k2.5"`` keeps its dot).
    caption : table caption (a line above the Markdown table, ``\\caption`` in LaTeX).
    label : LaTeX ``\\label`` key; none if None.

    Returns
    -------
    The three paths, CSV, Markdown, LaTeX. The CSV holds the frame as is, index included
    (read it back with ``pd.read_csv(path, index_col=0)``); each file is written atomically.
    """
    paths = table_files(stem)
    with atomic_path(paths[0]) as temporary:
        frame.to_csv(temporary)
    with atomic_path(paths[1]) as temporary:
        temporary.write_text(to_markdown(frame, caption), encoding="utf-8")
    with atomic_path(paths[2]) as temporary:
        temporary.write_text(to_latex(frame, caption, label), encoding="utf-8")
    return paths


def _numeric_key(value) -> float | None:
    """The value as a number if it is one (or a string that reads as a finite one)."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _column_order(values: Iterable) -> list:
    """Numeric labels in increasing order, then the others in order of first appearance."""
    unique = list(dict.fromkeys(values))
    numeric = [value for value in unique if _numeric_key(value) is not None]
    other = [value for value in unique if _numeric_key(value) is None]
    return sorted(numeric, key=_numeric_key) + other


def wide_table(records: Sequence[dict], rows: str, columns: str, value: str) -> pd.DataFrame:
    """Pivot long records into a wide table.

    ``[{"method": "PURE", "k": 2, "intra": "5.85 ± 0.01"}, ...]`` with
    ``rows="method", columns="k", value="intra"`` gives one row per method (in order of
    first appearance) and one column per k (numeric ks sorted, others after them in order
    of first appearance); the index is named ``rows`` and the column axis ``columns``.
    A missing combination is NaN; a repeated one is an error.
    """
    cells = {}
    for record in records:
        key = (record[rows], record[columns])
        if key in cells:
            raise ValueError(f"two records for {rows}={key[0]!r}, {columns}={key[1]!r}")
        cells[key] = record[value]
    row_keys = list(dict.fromkeys(row for row, _ in cells))
    column_keys = _column_order(column for _, column in cells)
    data = {
        column: [cells.get((row, column), np.nan) for row in row_keys] for column in column_keys
    }
    frame = pd.DataFrame(data, index=pd.Index(row_keys, name=rows))
    frame.columns = pd.Index(column_keys, name=columns)
    return frame
