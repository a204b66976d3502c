"""Class-distance matrices and the hierarchy score of a unit.

Hierarchy score
    For one unit, let ``f`` be its mean activation on each of ``C`` classes and ``D`` a
    symmetric ``[C, C]`` class-distance matrix with a zero diagonal. The score is

    ``mono(f) = f^T D f / ||f||_2^2``,

    a weighted mean of the distances between the classes the unit responds to. A unit
    active on a single class scores 0, one spread over distant classes scores high:
    lower means more monosemantic. The score does not change when ``f`` is scaled, and is
    undefined (NaN) for a unit that is zero on every class.

Distances
    * :func:`flat_distances`: every pair of distinct classes is 1 apart.
    * :func:`tree_distances`: the number of edges on the path between two leaves of a tree
      given as child -> parent links.
    * :func:`imagenet_distances`: the tree distance between the 1000 ImageNet-1k classes in
      WordNet 3.0, in timm's class order.

The ImageNet tree
    WordNet's noun hypernym graph is a DAG: a synset may have several hypernyms (``dog`` is
    both a ``canine`` and a ``domestic_animal``). The research note asks for "a minimum
    spanning tree ... shortest path between the two classes"; with all edges of equal
    weight every spanning tree is minimal, so one must be *chosen*. We keep, for every
    synset, its **first** hypernym pointer (``@`` or ``@i``) in ``data.noun`` file order.
    This is deterministic, needs no tie-breaking and yields a tree rooted at ``entity``
    (``n00001740``). The synsets on the 1000 classes' parent chains are committed in
    ``resources/imagenet_wordnet_tree.tsv``, so using the matrix needs no WordNet install;
    ``python -m monoscope.hierarchy build-imagenet`` regenerates that file byte for byte.
"""

from __future__ import annotations

import argparse
import functools
import importlib.resources
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

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
_MAX_LISTED = 20  # how many offending names an error message spells out


# --------------------------------------------------------------------------- helpers


def _as_array(values, dtype=None) -> np.ndarray:
    """``np.asarray`` that also takes torch tensors needing grad or living on a GPU."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def _listed(names: Sequence[Any]) -> str:
    """``names`` as a short comma-separated list for error messages."""
    shown = ", ".join(str(name) for name in list(names)[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f", ... ({more} more)" if more > 0 else "")


# --------------------------------------------------------------------------- score


def _check_distances(distances: np.ndarray, num_classes: int) -> None:
    """Raise ``ValueError`` unless ``distances`` is a symmetric zero-diagonal ``[C, C]``."""
    if distances.shape != (num_classes, num_classes):
        raise ValueError(
            f"distances must be [{num_classes}, {num_classes}] to match {num_classes} "
            f"classes, got shape {distances.shape}"
        )
    if not np.array_equal(distances, distances.T):
        raise ValueError("distances must be symmetric")
    if np.any(np.diagonal(distances) != 0):
        raise ValueError("distances must have a zero diagonal")


def hierarchy_score(class_means, distances) -> np.ndarray:
    """Hierarchy score ``f^T D f / ||f||_2^2`` of every unit (lower = more monosemantic).

    Parameters
    ----------
    class_means : array ``[U, C]`` (NumPy or torch), float
        Mean activation of each of ``U`` units on each of ``C`` classes
        (see :func:`class_means`). A 1-D array is read as a single unit.
    distances : array ``[C, C]``
        Symmetric class-distance matrix with a zero diagonal.

    Returns
    -------
    numpy.ndarray ``[U]``, float64
        The score of each unit; 0 for a unit active on one class only, NaN for a unit
        whose class means are all zero.

    Raises
    ------
    ValueError
        If the shapes do not match or ``distances`` is not symmetric with a zero diagonal.
    """
    f = _as_array(class_means, dtype=np.float64)
    if f.ndim == 1:
        f = f[None, :]
    if f.ndim != 2:
        raise ValueError(f"class_means must be [U, C], got shape {f.shape}")
    d = _as_array(distances, dtype=np.float64)
    _check_distances(d, f.shape[1])
    quadratic = np.einsum("uc,uc->u", f @ d, f)
    squared_norm = np.einsum("uc,uc->u", f, f)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = quadratic / squared_norm
    # 0/0 is already NaN; set it explicitly so a zero unit is NaN whatever ``quadratic`` is.
    score[squared_norm == 0] = np.nan
    return score


# --------------------------------------------------------------------------- class means


def _check_batch(acts, labels, num_units: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(acts [S, U] float64, labels [S] int64)`` of one batch."""
    acts = _as_array(acts, dtype=np.float64)
    labels = _as_array(labels)
    if acts.ndim != 2 or acts.shape[1] != num_units:
        raise ValueError(f"unit activations must be [S, {num_units}], got shape {acts.shape}")
    if labels.shape != (acts.shape[0],):
        raise ValueError(
            f"labels must be [{acts.shape[0]}] to match the activations, got shape {labels.shape}"
        )
    # Bool and float labels are refused: they are almost always a mix-up of arrays.
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    out_of_range = np.unique(labels[(labels < 0) | (labels >= num_classes)])
    if out_of_range.size:
        raise ValueError(
            f"labels must lie in [0, {num_classes}); got {_listed(out_of_range.tolist())}"
        )
    return acts, labels


class ClassMeanAccumulator:
    """Mean activation per class, accumulated batch by batch.

    Keeps only per-class sums (float64, so many batches add up without drift) and
    counts, so a caller never holds all activations at once.

    Parameters
    ----------
    num_units : number of units ``U`` (columns of each batch).
    num_classes : number of classes ``C``; labels lie in ``[0, C)``.

    Examples
    --------
    >>> acc = ClassMeanAccumulator(num_units=2, num_classes=2)
    >>> acc.update(np.array([[1.0, 0.0], [3.0, 2.0]]), np.array([0, 0]))
    >>> acc.update(np.array([[5.0, 1.0]]), np.array([1]))
    >>> acc.means()
    array([[2., 5.],
           [1., 1.]])
    """

    def __init__(self, num_units: int, num_classes: int) -> None:
        if num_units < 0 or num_classes < 1:
            raise ValueError("need num_units >= 0 and num_classes >= 1")
        self.num_units = int(num_units)
        self.num_classes = int(num_classes)
        self._sums = np.zeros((self.num_classes, self.num_units), dtype=np.float64)
        self._counts = np.zeros(self.num_classes, dtype=np.int64)

    @property
    def counts(self) -> np.ndarray:
        """Number of samples seen per class, ``[C]`` (a copy)."""
        return self._counts.copy()

    def update(self, acts, labels) -> None:
        """Add a batch.

        Parameters
        ----------
        acts : array ``[S, U]`` (NumPy or torch), activations of ``S`` samples.
        labels : integer array ``[S]``, the class of each sample.
        """
        acts, labels = _check_batch(acts, labels, self.num_units, self.num_classes)
        num_samples = labels.shape[0]
        # A sparse one-hot [C, S] times [S, U] sums each class's rows in one BLAS-free
        # pass, without the [C, S] dense matrix (1000 x 50000 would be 400 MB).
        one_hot = scipy.sparse.csr_matrix(
            (np.ones(num_samples), (labels, np.arange(num_samples))),
            shape=(self.num_classes, num_samples),
        )
        self._sums += np.asarray(one_hot @ acts)
        self._counts += np.bincount(labels, minlength=self.num_classes)

    def means(self, missing: str = "error") -> np.ndarray:
        """Mean activation per unit and class, ``[U, C]`` float64.

        ``missing`` decides what a class without samples gets: ``error`` raises,
        ``nan`` gives it NaN (a small data set where some classes are only in training;
        :func:`observed_classes` then restricts the score to the others).

        Raises
        ------
        ValueError
            If some class has no sample yet (its mean would be undefined) and
            ``missing`` is ``error``.
        """
        if missing not in ("error", "nan"):
            raise ValueError(f"missing must be 'error' or 'nan', got '{missing}'")
        empty = np.flatnonzero(self._counts == 0)
        if empty.size and missing == "error":
            raise ValueError(f"no samples for classes {_listed(empty.tolist())}")
        with np.errstate(invalid="ignore", divide="ignore"):
            means = self._sums / self._counts[:, None]
        means[empty] = np.nan
        return means.T


def observed_classes(class_means) -> np.ndarray:
    """Boolean mask ``[C]`` of the classes whose means are defined (no NaN in any unit)."""
    f = _as_array(class_means, dtype=np.float64)
    return ~np.isnan(f).any(axis=0)


def class_means(unit_activations, labels, num_classes: int) -> np.ndarray:
    """Mean activation of each unit on each class.

    Parameters
    ----------
    unit_activations : array ``[S, U]`` (NumPy or torch), one row per sample.
    labels : integer array ``[S]`` in ``[0, num_classes)``.
    num_classes : number of classes ``C``.

    Returns
    -------
    numpy.ndarray ``[U, C]``, float64

    Raises
    ------
    ValueError
        If a class has no sample, naming the classes, or the inputs do not fit.
    """
    activations = _as_array(unit_activations)
    if activations.ndim != 2:
        raise ValueError(f"unit activations must be [S, U], got shape {activations.shape}")
    accumulator = ClassMeanAccumulator(activations.shape[1], num_classes)
    accumulator.update(activations, labels)
    return accumulator.means()


# --------------------------------------------------------------------------- distances


def flat_distances(n: int) -> np.ndarray:
    """``[n, n]`` int64 matrix with 1 between distinct classes and 0 on the diagonal."""
    return 1 - np.eye(n, dtype=np.int64)


def _chain_to_root(leaf: str, parents: Mapping[str, str]) -> list[str]:
    """``[leaf, parent, grandparent, ..., root]``; raise ``ValueError`` on a cycle."""
    chain = [leaf]
    seen = {leaf}
    while chain[-1] in parents:
        parent = parents[chain[-1]]
        if parent in seen:
            cycle = chain[chain.index(parent) :] + [parent]
            raise ValueError(f"cycle in the parent links: {' -> '.join(cycle)}")
        chain.append(parent)
        seen.add(parent)
    return chain


def _check_leaves(leaves: Sequence[str], parents: Mapping[str, str]) -> None:
    """Raise ``ValueError`` for duplicate leaves or leaves absent from the tree."""
    duplicates = sorted(leaf for leaf, count in Counter(leaves).items() if count > 1)
    if duplicates:
        raise ValueError(f"duplicate leaves: {_listed(duplicates)}")
    nodes = set(parents) | set(parents.values())
    missing = [leaf for leaf in leaves if leaf not in nodes]
    # A lone leaf with no links at all is a one-node tree; only flag it when it is not.
    if missing and not (len(leaves) == 1 and not parents):
        raise ValueError(f"leaves missing from the tree: {_listed(missing)}")


def tree_distances(leaves: Sequence[str], parents: Mapping[str, str]) -> np.ndarray:
    """Number of edges on the tree path between every pair of leaves.

    In a tree the ancestors-or-self of a node form its path to the root, so the path
    between ``i`` and ``j`` is the symmetric difference of their ancestor sets:
    ``d(i, j) = n_i + n_j - 2 c_ij`` with ``n_i`` the size of ``i``'s set and ``c_ij`` the
    size of the common part. With ``A`` the ``[L, N]`` 0/1 ancestor matrix, ``c = A A^T``,
    one matrix product for all pairs.

    Parameters
    ----------
    leaves : node names, in the order of the matrix rows.
    parents : child -> parent links; roots have no entry. "Leaves" may also be inner
        nodes, their distances are then still path lengths.

    Returns
    -------
    numpy.ndarray ``[L, L]``, int64

    Raises
    ------
    ValueError
        If a leaf is duplicated or missing from the tree, the links of a leaf's chain form
        a cycle, or the leaves lie in different trees.
    """
    leaves = list(leaves)
    _check_leaves(leaves, parents)
    chains = [_chain_to_root(leaf, parents) for leaf in leaves]
    roots = {chain[-1] for chain in chains}
    if len(roots) > 1:
        raise ValueError(f"leaves lie in different trees, with roots {_listed(sorted(roots))}")
    index: dict[str, int] = {}
    rows, cols = [], []
    for row, chain in enumerate(chains):
        for node in chain:
            rows.append(row)
            cols.append(index.setdefault(node, len(index)))
    ancestors = np.zeros((len(leaves), len(index)), dtype=np.float64)
    ancestors[rows, cols] = 1.0
    # float64 BLAS is exact for these small integer counts and far faster than int matmul.
    common = ancestors @ ancestors.T
    sizes = ancestors.sum(axis=1)
    distances = sizes[:, None] + sizes[None, :] - 2.0 * common
    return np.rint(distances).astype(np.int64)


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
        chain = _chain_to_root(wnid, parents)
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


# --------------------------------------------------------------------------- configs

DISTANCE_KINDS = ("flat", "tree", "wordnet")
"""Values of ``kind`` that :func:`load_distances` accepts."""

_SPEC_KEYS = {"flat": {"kind"}, "tree": {"kind", "parents"}, "wordnet": {"kind"}}


def _imagenet_indices(class_names: Sequence[str | int]) -> list[int]:
    """Row indices in :func:`imagenet_distances` of wnids or of class indices."""
    names = list(class_names)
    if all(isinstance(name, (int, np.integer)) for name in names):
        indices = [int(name) for name in names]
        bad = [index for index in indices if not 0 <= index < 1000]
        if bad:
            raise ValueError(f"ImageNet class indices must lie in [0, 1000): {_listed(bad)}")
        return indices
    if not all(isinstance(name, str) for name in names):
        raise ValueError("class_names must be all ImageNet wnids or all class indices")
    position = {wnid: index for index, wnid in enumerate(imagenet_wnids())}
    unknown = [name for name in names if name not in position]
    if unknown:
        raise ValueError(f"not ImageNet-1k wnids: {_listed(unknown)}")
    return [position[name] for name in names]


def load_distances(spec: Mapping[str, Any], class_names: Sequence[str | int]) -> np.ndarray:
    """Class-distance matrix described by a config entry.

    Parameters
    ----------
    spec : mapping with ``kind`` one of

        * ``{"kind": "flat"}``: :func:`flat_distances`;
        * ``{"kind": "tree", "parents": {child: parent}}``: :func:`tree_distances` with the
          class names as leaves;
        * ``{"kind": "wordnet"}``: the rows and columns of :func:`imagenet_distances` for the
          class names, which are ImageNet-1k wnids (any subset, any order) or class indices.
    class_names : the classes, in the order of the matrix rows.

    Returns
    -------
    numpy.ndarray ``[C, C]``, int64 (a fresh array)

    Raises
    ------
    ValueError
        For an unknown kind or key, duplicate class names, or classes the distances do not
        know.
    """
    kind = spec.get("kind")
    if kind not in DISTANCE_KINDS:
        raise ValueError(f"distance kind must be one of {DISTANCE_KINDS}, got {kind!r}")
    extra = set(spec) - _SPEC_KEYS[kind]
    if extra:
        raise ValueError(f"unexpected keys for distance kind {kind!r}: {sorted(extra)}")
    names = list(class_names)
    if len(set(names)) != len(names):
        raise ValueError("class_names must not repeat")
    if kind == "flat":
        return flat_distances(len(names))
    if kind == "tree":
        if "parents" not in spec:
            raise ValueError("distance kind 'tree' needs 'parents': {child: parent}")
        return tree_distances([str(name) for name in names], spec["parents"])
    indices = _imagenet_indices(names)
    return imagenet_distances()[np.ix_(indices, indices)]


def distances_from_config(
    options: Mapping[str, Any], class_names: Sequence[str | int]
) -> np.ndarray:
    """:func:`load_distances` from a config section (``kind``, and ``parents`` for a tree).

    Config sections carry every key with its default (``parents: {}`` for any kind) and
    keys of their own (``k``, ``max_samples``); only what the kind uses is passed on.
    """
    spec = {"kind": options["kind"]}
    if options["kind"] == "tree":
        spec["parents"] = options.get("parents", {})
    return load_distances(spec, class_names)


# --------------------------------------------------------------------------- command line


def _default_tree_path() -> Path:
    return Path(__file__).resolve().parent / "resources" / TREE_RESOURCE


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m monoscope.hierarchy build-imagenet [--wordnet-dir DIR] [--out FILE]``."""
    parser = argparse.ArgumentParser(prog="python -m monoscope.hierarchy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build-imagenet", help="write the ImageNet WordNet tree table")
    build.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"))
    build.add_argument("--out", type=Path, default=_default_tree_path())
    args = parser.parse_args(argv)
    text = build_imagenet_tree_table(args.wordnet_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # newline="\n": the file must be byte-identical on every platform.
    with open(args.out, "w", encoding="utf-8", newline="\n") as out:
        out.write(text)
    _, lemmas = parse_tree_table(text)
    print(f"wrote {len(lemmas)} synsets to {args.out}")


if __name__ == "__main__":
    main()
