"""Class-distance matrices: flat, and a tree given as child -> parent links."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from monoscope.hierarchy._common import _listed

# --------------------------------------------------------------------------- distances


def flat_distances(n: int) -> np.ndarray:
    """``[n, n]`` int64 matrix with 1 between distinct classes and 0 on the diagonal."""
    return 1 - np.eye(n, dtype=np.int64)


def chain_to_root(leaf: str, parents: Mapping[str, str]) -> list[str]:
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
    chains = [chain_to_root(leaf, parents) for leaf in leaves]
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
