"""Table formatting and the CSV, Markdown and LaTeX files."""

import math
import re

import numpy as np
import pandas as pd
import pytest

from monoscope.tables import (
    escape_latex,
    format_mean_se,
    table_files,
    table_stem,
    wide_table,
    write_table,
)


def test_format_mean_se():
    assert format_mean_se(5.85, 0.0123) == "5.850 ± 0.012"
    assert format_mean_se(np.float32(0.5678), np.float64(0.01), digits=2) == "0.57 ± 0.01"
    assert format_mean_se(math.nan, 0.1) == "–"
    assert format_mean_se(None, None) == "–"
    assert format_mean_se(6.08, math.nan) == "6.080"
    assert format_mean_se(6.08, None) == "6.080"


def records():
    return [
        {"method": "pure_circuit", "k": 5, "intra": format_mean_se(5.80, 0.01)},
        {"method": "pure_circuit", "k": 2, "intra": format_mean_se(5.85, 0.012)},
        {"method": "activation", "k": 2, "intra": format_mean_se(5.95, 0.02)},
        {"method": "pure_circuit", "k": 3, "intra": format_mean_se(5.83, 0.01)},
        {"method": "activation", "k": 5, "intra": format_mean_se(5.90, math.nan)},
    ]


def test_wide_table_layout():
    frame = wide_table(records(), rows="method", columns="k", value="intra")
    assert frame.index.tolist() == ["pure_circuit", "activation"]  # first appearance
    assert frame.columns.tolist() == [2, 3, 5]  # numeric, sorted
    assert frame.index.name == "method" and frame.columns.name == "k"
    assert frame.loc["pure_circuit", 2] == "5.850 ± 0.012"
    assert frame.loc["activation", 5] == "5.900"
    assert pd.isna(frame.loc["activation", 3])  # no record


def test_wide_table_column_order_and_duplicates():
    rows = [
        {"m": "a", "k": "auto", "v": 1.0},
        {"m": "a", "k": "10", "v": 2.0},
        {"m": "b", "k": "2", "v": 3.0},
        {"m": "b", "k": "best", "v": 4.0},
    ]
    frame = wide_table(rows, "m", "k", "v")
    assert frame.columns.tolist() == ["2", "10", "auto", "best"]  # numbers first, by value
    assert frame.to_numpy().tolist()[0][1:3] == [2.0, 1.0]
    with pytest.raises(ValueError, match="two records"):
        wide_table([*rows, {"m": "a", "k": "10", "v": 0.0}], "m", "k", "v")
    assert wide_table([], "m", "k", "v").empty


def test_escape_latex():
    assert escape_latex("a_b & 50% #1 $x$ {y}") == r"a\_b \& 50\% \#1 \$x\$ \{y\}"
    assert escape_latex("5.85 ± 0.01") == r"5.85 $\pm$ 0.01"
    assert escape_latex("~^\\") == r"\textasciitilde{}\textasciicircum{}\textbackslash{}"
    assert escape_latex("–") == "--"


def test_write_table_files(tmp_path):
    frame = wide_table(records(), rows="method", columns="k", value="intra")
    stem = tmp_path / "tables" / "semantic_distance.k2"
    caption = "CLIP distances within virtual neurons (mean ± SE), 100% of refs"
    paths = write_table(frame, stem, caption, label="tab:semantic_distance")

    assert [path.name for path in paths] == [
        "semantic_distance.k2.csv",
        "semantic_distance.k2.md",
        "semantic_distance.k2.tex",
    ]
    assert all(path.exists() for path in paths)
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == sorted(p.name for p in paths)

    read = pd.read_csv(paths[0], index_col=0)
    expected = frame.copy()
    expected.columns = pd.Index([str(column) for column in frame.columns])
    pd.testing.assert_frame_equal(read, expected)

    markdown = paths[1].read_text(encoding="utf-8")
    lines = markdown.splitlines()
    assert lines[0] == f"Table: {caption}"
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + len(frame)  # header, rule, rows
    assert table[0] == "| method | 2 | 3 | 5 |"
    assert table[1] == "| :--- | ---: | ---: | ---: |"
    assert table[3] == "| activation | 5.950 ± 0.020 | – | 5.900 |"
    assert all(line.count("|") == 5 for line in table)

    tex = paths[2].read_text(encoding="utf-8")
    for command in (r"\begin{table}", r"\toprule", r"\midrule", r"\bottomrule", r"\end{table}"):
        assert command in tex
    assert r"\caption{CLIP distances within virtual neurons (mean $\pm$ SE), 100\% of refs}" in tex
    assert r"\label{tab:semantic_distance}" in tex
    assert r"\begin{tabular}{lrrr}" in tex
    assert r"pure\_circuit & 5.850 $\pm$ 0.012 & 5.830 $\pm$ 0.010 & 5.800 $\pm$ 0.010 \\" in tex
    assert "±" not in tex and "–" not in tex
    body = tex.replace(r"\label{tab:semantic_distance}", "").replace(" & ", " ")
    assert not re.search(r"(?<!\\)[_%&#]", body)  # no unescaped specials (label keys are raw)


def test_write_table_plain_frame(tmp_path):
    frame = pd.DataFrame({"space_name": ["dino", "pure"], "pearson": [0.57, np.nan], "n": [3, 4]})
    csv, markdown, tex = write_table(frame, tmp_path / "alignment", "Alignment")
    pd.testing.assert_frame_equal(pd.read_csv(csv, index_col=0), frame)
    lines = markdown.read_text(encoding="utf-8").splitlines()
    assert lines[2] == "| space_name | pearson | n |"  # the 0..n-1 index is not shown
    assert lines[4] == "| dino | 0.57 | 3 |"
    assert lines[5] == "| pure | – | 4 |"
    text = tex.read_text(encoding="utf-8")
    assert r"space\_name & pearson & n \\" in text
    assert r"\label" not in text
    assert r"\begin{tabular}{rrr}" in text


def test_write_table_escapes_pipes_in_markdown(tmp_path):
    frame = pd.DataFrame({"a|b": ["x|y"]}, index=pd.Index(["r"], name="row"))
    _, markdown, _ = write_table(frame, tmp_path / "pipes", "Pipes")
    assert r"| row | a\|b |" in markdown.read_text(encoding="utf-8")
    assert r"| r | x\|y |" in markdown.read_text(encoding="utf-8")


def test_table_stem_accepts_exactly_one_tables_files(tmp_path):
    files = table_files(tmp_path / "k2.5")
    assert [path.name for path in files] == ["k2.5.csv", "k2.5.md", "k2.5.tex"]
    assert table_stem(reversed([str(path) for path in files])) == tmp_path / "k2.5"
    written = write_table(pd.DataFrame({"a": [1]}), table_stem(files), "caption")
    assert written == files
    for wrong in (files[:2], [*files[:2], tmp_path / "other.tex"], [*files, tmp_path / "k2.5.txt"]):
        with pytest.raises(ValueError, match="one table's files"):
            table_stem(wrong)
