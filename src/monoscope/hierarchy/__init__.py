"""The WordNet-hierarchy monosemanticity score of a unit, and the class distances it uses.

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
    ``python -m monoscope.hierarchy build-imagenet`` regenerates that file byte for by

Modules
    :mod:`~monoscope.hierarchy.score` (the score and per-class means),
    :mod:`~monoscope.hierarchy.distances` (flat and tree distances),
    :mod:`~monoscope.hierarchy.wordnet` (the ImageNet tree from WordNet),
    :mod:`~monoscope.hierarchy.spec` (a distance matrix from a config section) and
    ``python -m monoscope.hierarchy`` (regenerates the committed tree table).
"""

from monoscope.hierarchy.distances import chain_to_root, flat_distances, tree_distances
from monoscope.hierarchy.score import (
    ClassMeanAccumulator,
    class_means,
    hierarchy_score,
    observed_classes,
)
from monoscope.hierarchy.spec import DISTANCE_KINDS, distances_from_config, load_distances
from monoscope.hierarchy.wordnet import (
    NO_PARENT,
    TREE_COLUMNS,
    TREE_RESOURCE,
    WORDNET_ROOT,
    build_imagenet_tree_table,
    imagenet_distances,
    imagenet_wnids,
    parse_tree_table,
    parse_wordnet_nouns,
    read_imagenet_tree,
)

__all__ = [
    "DISTANCE_KINDS",
    "NO_PARENT",
    "TREE_COLUMNS",
    "TREE_RESOURCE",
    "WORDNET_ROOT",
    "ClassMeanAccumulator",
    "build_imagenet_tree_table",
    "chain_to_root",
    "class_means",
    "distances_from_config",
    "flat_distances",
    "hierarchy_score",
    "imagenet_distances",
    "imagenet_wnids",
    "load_distances",
    "observed_classes",
    "parse_tree_table",
    "parse_wordnet_nouns",
    "read_imagenet_tree",
    "tree_distances",
]
