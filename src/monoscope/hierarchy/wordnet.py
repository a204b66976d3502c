"""The ImageNet-1k classes' WordNet tree: parsing WordNet, the committed table, distances.

See :mod:`monoscope.hierarchy` for how the tree is chosen from WordNet's hypernym DAG.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monoscope.hierarchy._common import _listed
from monoscope.hierarchy.distances import chain_to_root, tree_distances

WORDNET_ROOT = "n00001740"
"""``entity.n.01``, the root of WordNet's noun hierarchy."""

TREE_RESOURCE = "imagenet_wordnet_tree.tsv"
"""File name of the committed ImageNet WordNet tree, under ``monoscope/resources``."""

TREE_COLUMNS = ("wnid", "parent_wnid", "first_lemma")
"""Columns of the committed tree table, in order."""

NO_PARENT = "-"
"""``parent_wnid`` of the root in the tree table."""

_HYPERNYM_SYMBOLS = ("@", "@i")  # hypernym and instance hypernym pointers in data.noun
_TAB = "\t"  # f-string expressions cannot hold a backslash before Python 3.12

# --------------------------------------------------------------------------- ImageNet


@functools.lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in timm's class order (index -> wnid)."""
    from timm.data import ImageNetInfo  # deferred: timm is slow to import

    return tuple(ImageNetInfo("imagenet-1k").label_names())


def parse_wordnet_nouns(data_noun: Path) -> dict[str, tuple[str, str | None]]:
    """Read WordNet's ``data.noun`` into ``wnid -> (first_lemma, first_hypernym_wnid)``.

    A line is ``offset lex_filenum ss_type w_cnt (word lex_id)*w_cnt p_cnt
    (symbol offset pos source/target)*p_cnt [frames] | gloss`` with ``w_cnt`` in hex;
    the license lines at the top start with spaces. The hypernym is the first ``@`` or
    ``@i`` pointer in file order (None for the root), see the module docstring.
    """
    synsets: dict[str, tuple[str, str | None]] = {}
    with open(data_noun, encoding="utf-8") as lines:
        for line in lines:
            if line.startswith(" "):
                continue
            fields = line.split(" | ", 1)[0].split()
            word_count = int(fields[3], 16)
            first_lemma = fields[4]
            pointer_at = 4 + 2 * word_count
            pointer_count = int(fields[pointer_at])
            pointers = fields[pointer_at + 1 : pointer_at + 1 + 4 * pointer_count]
            hypernym = next(
                (
                    f"n{pointers[i + 1]}"
                    for i in range(0, len(pointers), 4)
                    if pointers[i] in _HYPERNYM_SYMBOLS
                ),
                None,
            )
            synsets[f"n{fields[0]}"] = (first_lemma, hypernym)
    return synsets


_TABLE_HEADER = f"""\
# ImageNet-1k classes in WordNet 3.0, as a tree: every synset on the parent chains of
# the 1000 ImageNet-1k classes (timm.data.ImageNetInfo("imagenet-1k")), sorted by wnid.
# wnid = "n" + the 8-digit noun synset offset in data.noun (Debian package wordnet-base).
# parent_wnid = the synset's FIRST hypernym pointer ("@" or "@i") in data.noun order, which
# turns the hypernym DAG into a tree rooted at entity ({WORDNET_ROOT}, parent "{NO_PARENT}").
# Generated, do not edit; regenerate with:
#   python -m monoscope.hierarchy build-imagenet --wordnet-dir /usr/share/wordnet \\
#     --out src/monoscope/resources/{TREE_RESOURCE}
{_TAB.join(TREE_COLUMNS)}
"""


def build_imagenet_tree_table(wordnet_dir: Path, wnids: Sequence[str] | None = None) -> str:
    """Text of the tree table for ``wnids`` (default: the 1000 ImageNet-1k classes).

    Raises
    ------
    ValueError
        If a wnid is not a WordNet noun synset or its chain does not end at entity.
    """
    synsets = parse_wordnet_nouns(Path(wordnet_dir) / "data.noun")
    wnids = imagenet_wnids() if wnids is None else wnids
    unknown = [wnid for wnid in wnids if wnid not in synsets]
    if unknown:
        raise ValueError(f"not WordNet noun synsets: {_listed(unknown)}")
    parents = {wnid: hyper for wnid, (_, hyper) in synsets.items() if hyper is not None}
    on_chains: set[str] = set()
    for wnid in wnids:
        chain = chain_to_root(wnid, parents)
        if chain[-1] != WORDNET_ROOT:
            raise ValueError(f"the chain of {wnid} ends at {chain[-1]}, not at {WORDNET_ROOT}")
        on_chains.update(chain)
    rows = [
        f"{wnid}\t{parents.get(wnid, NO_PARENT)}\t{synsets[wnid][0]}\n"
        for wnid in sorted(on_chains)
    ]
    return _TABLE_HEADER + "".join(rows)


def parse_tree_table(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Read a tree table into ``(parents: wnid -> parent, lemmas: wnid -> first lemma)``.

    Lines starting with ``#`` are comments; the first other line is the column header.
    The root's parent ``-`` gives no entry in ``parents``.
    """
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    if not lines or tuple(lines[0].split("\t")) != TREE_COLUMNS:
        raise ValueError(f"tree table must start with the header {_TAB.join(TREE_COLUMNS)!r}")
    parents: dict[str, str] = {}
    lemmas: dict[str, str] = {}
    for line in lines[1:]:
        wnid, parent, lemma = line.split("\t")
        lemmas[wnid] = lemma
        if parent != NO_PARENT:
            parents[wnid] = parent
    return parents, lemmas


def read_imagenet_tree() -> tuple[dict[str, str], dict[str, str]]:
    """The committed ImageNet WordNet tree, as :func:`parse_tree_table` returns it."""
    resource = importlib.resources.files("monoscope") / "resources" / TREE_RESOURCE
    return parse_tree_table(resource.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def imagenet_distances() -> np.ndarray:
    """WordNet tree distance between the 1000 ImageNet-1k classes, ``[1000, 1000]`` int64.

    Rows and columns follow timm's class order (:func:`imagenet_wnids`). Read from the
    committed tree table, so no WordNet install is needed. The result is cached and
    read-only: copy it before changing it.
    """
    parents, _ = read_imagenet_tree()
    distances = tree_distances(imagenet_wnids(), parents)
    distances.setflags(write=False)  # the cached array is shared by every caller
    return distances
