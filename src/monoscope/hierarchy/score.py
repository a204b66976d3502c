"""The hierarchy score of a unit, and the per-class mean activations it reads.

``mono(f) = f^T D f / ||f||_2^2`` for a unit's class means ``f`` and a class-distance
matrix ``D`` (:mod:`monoscope.hierarchy.distances`); see :mod:`monoscope.hierarchy`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from monoscope.hierarchy._common import _as_array, _listed

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
