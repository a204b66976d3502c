"""The swappable parts of a dictionary (an SAE): encoder, sparsifier, dictionary.

Every SAE in monoscope is one composition (the notation of :mod:`monoscope.sae.base`)::

    c     = x - b_d                  pre-encoder bias (optional; else c = x)
    pre   = encoder(c)               [..., K]      ENCODERS
    f     = sparsifier(pre)          [..., K]      SPARSIFIERS
    x_hat = dictionary() f + b_d     W_d [d, K]    DICTIONARIES

Each kind of part is a :class:`~monoscope.registry.Registry` of ``nn.Module`` classes,
all built as ``Part(input_dim, num_features, **options)``:

``ENCODERS``
    ``linear``: ``pre = W_e c + b_e`` with W_e ``[K, d]``. ``nonlinear``: one hidden ReLU
    layer, ``pre = W_e ReLU(W_h c + b_h) + b_e`` with W_h ``[H, d]``, W_e ``[K, H]``.
``SPARSIFIERS``
    ``relu``: ``f = ReLU(pre)``, with the L1 penalty ``lambda mean ||f||_1``. ``topk``:
    ``f = ReLU(TopK_k(pre))`` (exactly k pre-activations kept, then the ReLU), with the
    dead-feature auxiliary loss of Gao et al. (2024). ``batch_topk``: the ``k * B``
    largest pre-activations of a batch of B vectors are kept (Bussmann et al. 2024).
``DICTIONARIES``
    ``free``: W_d is a parameter; with ``unit_norm`` its columns are kept at unit norm
    (renormalised after every step, the gradient along each column removed before it).
    ``archetypal``: column i is ``sum_c softmax(logits_i)_c C_c`` for the centroids C
    ``[n_centroids, d]`` of the data, plus, when ``relaxation`` delta > 0, a free offset
    of norm at most delta (projected after every step).

A part's penalty terms and constraints are its own; the SAE (:class:`SparseAutoencoder`)
calls them in a fixed order, so a training loop needs to know none of them.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from monoscope.registry import Registry

# Parts receive the SAE they belong to (a monoscope.sae.base.SparseAutoencoder), typed as
# a plain nn.Module: the base imports the parts, so the parts do not import the base.

# Guards divisions by a column norm: a column can only reach zero through a bad update.
NORM_EPSILON = 1e-12

ENCODERS: Registry[type[Encoder]] = Registry("SAE encoder")
SPARSIFIERS: Registry[type[Sparsifier]] = Registry("SAE sparsifier")
DICTIONARIES: Registry[type[Dictionary]] = Registry("SAE dictionary")


def _check_sizes(input_dim: int, num_features: int) -> None:
    if input_dim < 1:
        raise ValueError(f"input_dim must be positive, got {input_dim}")
    if num_features < 1:
        raise ValueError(f"num_features must be positive, got {num_features}")


# ---------------------------------------------------------------------- encoders


class Encoder(nn.Module):
    """Maps centred inputs ``[..., d]`` to pre-activations ``[..., K]``.

    Attributes: ``weight`` (the last layer, ``[K, in]``), ``bias`` ``[K]``. ``tieable``
    says whether ``weight`` can start as the dictionary's transpose (``in == d``).
    """

    tieable: ClassVar[bool] = False

    def __init__(self, input_dim: int, num_features: int) -> None:
        super().__init__()
        _check_sizes(input_dim, num_features)
        self.input_dim, self.num_features = input_dim, num_features

    def reset_parameters(self, tied_to: torch.Tensor | None = None) -> None:
        """Initialise from the global generator; ``tied_to`` is W_d ``[d, K]`` or None."""
        raise NotImplementedError


@ENCODERS.register("linear")
class LinearEncoder(Encoder):
    """``pre = W_e c + b_e``; W_e ``weight [K, d]``, b_e ``bias [K]``."""

    tieable = True

    def __init__(self, input_dim: int, num_features: int) -> None:
        super().__init__(input_dim, num_features)
        self.weight = nn.Parameter(torch.empty(num_features, input_dim))
        self.bias = nn.Parameter(torch.zeros(num_features))

    @torch.no_grad()
    def reset_parameters(self, tied_to: torch.Tensor | None = None) -> None:
        """Rows tied to the dictionary columns (every feature starts alive and aligned
        with its direction), or Kaiming-uniform as ``nn.Linear``; zero bias."""
        if tied_to is not None:
            self.weight.copy_(tied_to.T)
        else:
            nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.bias.zero_()

    def forward(self, centred: torch.Tensor) -> torch.Tensor:
        return centred @ self.weight.T + self.bias


@ENCODERS.register("nonlinear")
class NonlinearEncoder(Encoder):
    """``pre = W_e ReLU(W_h c + b_h) + b_e``: ``hidden_weight [H, d]``, ``hidden_bias [H]``,
    ``weight [K, H]``, ``bias [K]``."""

    def __init__(self, input_dim: int, num_features: int, hidden_dim: int = 128) -> None:
        super().__init__(input_dim, num_features)
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim must be positive, got {hidden_dim}")
        self.hidden_dim = hidden_dim
        self.hidden_weight = nn.Parameter(torch.empty(hidden_dim, input_dim))
        self.hidden_bias = nn.Parameter(torch.zeros(hidden_dim))
        self.weight = nn.Parameter(torch.empty(num_features, hidden_dim))
        self.bias = nn.Parameter(torch.zeros(num_features))

    @torch.no_grad()
    def reset_parameters(self, tied_to: torch.Tensor | None = None) -> None:
        """Both layers Kaiming-uniform (hidden first), as ``nn.Linear``; zero biases."""
        if tied_to is not None:
            raise ValueError("a nonlinear encoder cannot be tied to the dictionary")
        nn.init.kaiming_uniform_(self.hidden_weight, a=5**0.5)
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.hidden_bias.zero_()
        self.bias.zero_()

    def forward(self, centred: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(centred @ self.hidden_weight.T + self.hidden_bias)
        return hidden @ self.weight.T + self.bias


# ---------------------------------------------------------------------- sparsifiers


def top_k_codes(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest entries of the last axis of ``pre`` (exactly k), ReLU them,
    zero the rest."""
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))


class Sparsifier(nn.Module):
    """Maps pre-activations ``[..., K]`` to codes ``[..., K]``, and names its penalties."""

    def __init__(self, input_dim: int, num_features: int) -> None:
        super().__init__()
        _check_sizes(input_dim, num_features)
        self.input_dim, self.num_features = input_dim, num_features

    def penalties(
        self,
        sae: nn.Module,
        x: torch.Tensor,
        x_hat: torch.Tensor,
        pre: torch.Tensor,
        codes: torch.Tensor,
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """Loss terms beyond the reconstruction, ``{name: (weight, scalar term)}``."""
        return {}


@SPARSIFIERS.register("relu")
class ReLUSparsifier(Sparsifier):
    """``f = ReLU(pre)``; penalty ``l1`` = mean over the batch of ||f||_1, weight
    ``l1_coefficient`` (lambda)."""

    def __init__(self, input_dim: int, num_features: int, l1_coefficient: float = 0.0) -> None:
        super().__init__(input_dim, num_features)
        if l1_coefficient < 0:
            raise ValueError(f"l1_coefficient must be >= 0, got {l1_coefficient}")
        self.l1_coefficient = float(l1_coefficient)

    def forward(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre)

    def penalties(self, sae, x, x_hat, pre, codes):
        return {"l1": (self.l1_coefficient, codes.abs().sum(dim=-1).mean())}


@SPARSIFIERS.register("topk")
class TopKSparsifier(Sparsifier):
    """``f = ReLU(TopK_k(pre))``, with the dead-feature auxiliary loss (Gao et al. 2024).

    A feature is *dead* when it has not fired in the last ``dead_tokens`` training samples
    (the SAE's ``samples_since_fired``). The auxiliary loss reconstructs the main
    reconstruction's residual ``e = x - x_hat`` from the top ``k_aux`` pre-activations of
    the dead features only::

        aux = ||e - W_d TopK_{k_aux}(pre restricted to dead)||^2 / ||e - mean(e)||^2

    summed over the batch (the denominator, the residual's spread, makes the term
    scale-free), weighted by ``aux_coef``. It gives dead features a gradient towards
    what the alive ones miss. ``k_aux`` None means ``min(d // 2, K)`` (Gao et al. use
    about d / 2), at least 1, and at most the number of dead features.
    """

    def __init__(
        self,
        input_dim: int,
        num_features: int,
        k: int = 32,
        k_aux: int | None = None,
        aux_coef: float = 1 / 32,
        dead_tokens: int = 100_000,
    ) -> None:
        super().__init__(input_dim, num_features)
        if not 1 <= k <= num_features:
            raise ValueError(f"k must be in 1..num_features ({num_features}), got {k}")
        if k_aux is not None and k_aux < 1:
            raise ValueError(f"k_aux must be positive (or None), got {k_aux}")
        if aux_coef < 0:
            raise ValueError(f"aux_coef must be >= 0, got {aux_coef}")
        if dead_tokens < 1:
            raise ValueError(f"dead_tokens must be positive, got {dead_tokens}")
        self.k = int(k)
        self.k_aux = None if k_aux is None else int(k_aux)
        self.aux_coef = float(aux_coef)
        self.dead_tokens = int(dead_tokens)

    def forward(self, pre: torch.Tensor) -> torch.Tensor:
        return top_k_codes(pre, self.k)

    @property
    def auxiliary_k(self) -> int:
        """``k_aux`` with its default resolved (before capping at the dead count)."""
        if self.k_aux is not None:
            return min(self.k_aux, self.num_features)
        return max(1, min(self.input_dim // 2, self.num_features))

    def dead_mask(self, sae: nn.Module) -> torch.Tensor:
        """Boolean ``[K]``: features that have not fired in the last ``dead_tokens`` samples."""
        return sae.samples_since_fired >= self.dead_tokens

    def auxiliary_loss(
        self, sae: nn.Module, x: torch.Tensor, x_hat: torch.Tensor, pre: torch.Tensor
    ) -> torch.Tensor:
        """The dead-feature loss ``aux`` (before ``aux_coef``); zero when none is dead."""
        dead = self.dead_mask(sae)
        num_dead = int(dead.sum())
        if num_dead == 0:
            return pre.new_zeros(())
        k_aux = min(self.auxiliary_k, num_dead)
        # Alive features can never be picked: their pre-activations become -inf.
        dead_only = pre.masked_fill(~dead, float("-inf"))
        codes = top_k_codes(dead_only, k_aux)
        # The decoder bias is already in x_hat; the dead features explain the residual.
        residual_hat = codes @ sae.dictionary().T
        residual = (x - x_hat).detach()
        if residual.shape[0] > 1:
            scale = (residual - residual.mean(dim=0)).pow(2).sum()
        else:  # one sample has no spread; fall back to its squared norm
            scale = residual.pow(2).sum()
        return (residual - residual_hat).pow(2).sum() / scale.clamp_min(1e-12)

    def penalties(self, sae, x, x_hat, pre, codes):
        return {"aux": (self.aux_coef, self.auxiliary_loss(sae, x, x_hat, pre))}


@SPARSIFIERS.register("batch_topk")
class BatchTopKSparsifier(Sparsifier):
    """``f = ReLU`` of the ``k * B`` largest pre-activations of a batch of B vectors.

    The budget is k per vector on average, shared across the batch, so a vector may use
    more or fewer features than k. The codes of a vector therefore depend on the rest of
    its batch (Bussmann et al. 2024 switch to a fixed threshold at inference; not here).
    """

    def __init__(self, input_dim: int, num_features: int, k: int = 32) -> None:
        super().__init__(input_dim, num_features)
        if not 1 <= k <= num_features:
            raise ValueError(f"k must be in 1..num_features ({num_features}), got {k}")
        self.k = int(k)

    def forward(self, pre: torch.Tensor) -> torch.Tensor:
        flat = pre.reshape(-1)
        return top_k_codes(flat, self.k * (flat.numel() // pre.shape[-1])).reshape(pre.shape)


# ---------------------------------------------------------------------- dictionaries


class Dictionary(nn.Module):
    """The decoder matrix W_d ``[d, K]``: calling the part returns it.

    ``unit_norm`` says whether the columns are kept at unit L2 norm; then
    :meth:`remove_parallel_grad_` and :meth:`normalize_` act, otherwise they do nothing.
    :meth:`apply_constraints_` is what follows every optimiser step.
    """

    unit_norm: bool = False

    def __init__(self, input_dim: int, num_features: int) -> None:
        super().__init__()
        _check_sizes(input_dim, num_features)
        self.input_dim, self.num_features = input_dim, num_features

    def reset_parameters(self) -> None:
        """Initialise from the global generator."""
        raise NotImplementedError

    def normalize_(self) -> None:
        """Rescale every column to unit L2 norm (in place), if ``unit_norm``."""

    def remove_parallel_grad_(self) -> None:
        """Remove from the gradient its component along each column, if ``unit_norm``."""

    def apply_constraints_(self) -> None:
        """Project the parameters back onto the dictionary's constraint set."""


@DICTIONARIES.register("free")
class FreeDictionary(Dictionary):
    """W_d is the parameter ``weight [d, K]``; unit-norm columns when ``unit_norm``.

    Unit columns make the size of a code the size of its feature's contribution, so a
    sparsity penalty cannot be dodged by shrinking codes and growing directions.
    """

    def __init__(self, input_dim: int, num_features: int, unit_norm: bool = True) -> None:
        super().__init__(input_dim, num_features)
        self.unit_norm = bool(unit_norm)
        self.weight = nn.Parameter(torch.empty(input_dim, num_features))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random unit columns (Gaussian columns normalised are uniform on the sphere)."""
        self.weight.normal_()
        self._normalize()

    def forward(self) -> torch.Tensor:
        return self.weight

    @torch.no_grad()
    def _normalize(self) -> None:
        self.weight.div_(self.weight.norm(dim=0, keepdim=True).clamp_min(NORM_EPSILON))

    def normalize_(self) -> None:
        if self.unit_norm:
            self._normalize()

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """Remove from ``weight.grad`` its component along each column (in place).

        With unit-norm columns, a gradient along a column would only change its length,
        which :meth:`normalize_` undoes; removing it keeps the optimiser's step (and
        Adam's moment estimates) for the directions that matter. Call it between
        ``backward()`` and ``optimizer.step()``.
        """
        grad = self.weight.grad
        if not self.unit_norm or grad is None:
            return
        columns = self.weight
        along = (grad * columns).sum(dim=0, keepdim=True)
        squared_norm = columns.pow(2).sum(dim=0, keepdim=True).clamp_min(NORM_EPSILON)
        grad.sub_(columns * (along / squared_norm))

    def apply_constraints_(self) -> None:
        self.normalize_()


def kmeans_centroids(vectors: torch.Tensor, n_centroids: int, seed: int) -> torch.Tensor:
    """Centroids ``[C, d]`` of ``vectors [N, d]`` by scikit-learn's ``KMeans`` (seeded)."""
    from sklearn.cluster import KMeans

    if n_centroids > vectors.shape[0]:
        raise ValueError(
            f"sae.n_centroids ({n_centroids}) exceeds the {vectors.shape[0]} training vectors; "
            "lower it"
        )
    kmeans = KMeans(n_clusters=n_centroids, n_init=1, random_state=seed)
    kmeans.fit(vectors.double().numpy())
    return torch.from_numpy(kmeans.cluster_centers_).float()


@DICTIONARIES.register("archetypal")
class ArchetypalDictionary(Dictionary):
    """Atoms tied to the data (Fel et al. 2025, *Archetypal SAE*).

    Column i of W_d is ``sum_c softmax(logits_i)_c C_c``, a convex combination of the
    centroids C (buffer ``centroids [C, d]``, set by :meth:`fit_centroids_`), plus, when
    ``relaxation`` delta > 0, the column i of ``offsets [d, K]``, of norm at most delta.
    Atoms are *not* normalised: rescaling would leave the convex hull that is the point
    of the constraint, and with non-negative codes the scale is absorbed by the encoder.
    """

    def __init__(
        self, input_dim: int, num_features: int, n_centroids: int = 1, relaxation: float = 0.0
    ) -> None:
        super().__init__(input_dim, num_features)
        if n_centroids < 1:
            raise ValueError("an archetypal dictionary needs n_centroids >= 1")
        if not (relaxation >= 0 and math.isfinite(relaxation)):
            raise ValueError(f"relaxation must be >= 0, got {relaxation}")
        self.n_centroids, self.relaxation = int(n_centroids), float(relaxation)
        self.logits = nn.Parameter(torch.zeros(num_features, self.n_centroids))
        self.register_buffer("centroids", torch.zeros(self.n_centroids, input_dim))
        if self.relaxation > 0:
            self.offsets = nn.Parameter(torch.zeros(input_dim, num_features))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Each atom's logits are ``log(n_centroids)`` on one centroid (distinct centroids
        while there are enough) and 0 elsewhere, i.e. about half its weight on one
        archetype, so atoms do not all start at the centroids' mean. Zero offsets."""
        count = self.n_centroids
        if self.num_features <= count:
            chosen = torch.randperm(count)[: self.num_features]
        else:
            chosen = torch.randint(0, count, (self.num_features,))
        self.logits.zero_()
        self.logits[torch.arange(self.num_features), chosen] = math.log(max(count, 2))
        if self.relaxation > 0:
            self.offsets.zero_()

    def weights(self) -> torch.Tensor:
        """``[K, C]``: row i holds atom i's convex weights over the centroids."""
        return torch.softmax(self.logits, dim=-1)

    def forward(self) -> torch.Tensor:
        atoms = (self.weights() @ self.centroids).T
        if self.relaxation > 0:
            atoms = atoms + self.offsets
        return atoms

    @torch.no_grad()
    def fit_centroids_(self, vectors: torch.Tensor, seed: int) -> None:
        """Set the centroids to the k-means centroids of ``vectors [N, d]``."""
        self.centroids.copy_(kmeans_centroids(vectors, self.n_centroids, seed))

    @torch.no_grad()
    def apply_constraints_(self) -> None:
        """Shrink each offset column to norm at most ``relaxation``."""
        if self.relaxation <= 0:
            return
        norms = self.offsets.norm(dim=0, keepdim=True)
        self.offsets.mul_((self.relaxation / norms.clamp_min(NORM_EPSILON)).clamp(max=1.0))
