"""TopK SAEs on orbit latents: vanilla, equivariant (three losses) and archetypal.

Every SAE here reads the latents of whole orbits, ``a [B, n, d]`` with member
``a_j = h(g^j x)`` (:mod:`monoscope.equivariant.orbits`), and shares one parametrisation
(the notation of :mod:`monoscope.sae.base`)::

    c     = a - b_d                      pre-encoder bias (``pre_encoder_bias``; else c = a)
    pre   = W_e c + b_e                  ``linear`` encoder, W_e [K, d]
    pre   = W_e ReLU(W_h c + b_h) + b_e  ``nonlinear`` encoder (the paper's default),
                                         W_h [H, d], W_e [K, H]
    z     = ReLU(TopK_k(pre))            exactly k pre-activations kept, then the ReLU
    D(z)  = W_d z + b_d                  decoder, W_d [d, K], columns of unit norm
                                         (``unit_decoder``, the paper's --sae-unit-decoder)

The families differ in what the decoder is and in the loss. M is the fitted latent
action of the generator g (:mod:`monoscope.equivariant.symmetry`), kept in the SAE as the
buffer ``symmetry``; ``M^{-j}`` means ``M^{n-j}``. Losses are means over the batch (and
over member pairs) of squared errors summed over the d latent dimensions.

``vanilla`` (loss_type ``mse``)
    Members are independent samples: ``L = mean_j ||a_j - D(E(a_j))||^2``.

``equivariant``
    The symmetry-aware prior of the paper: features are *invariant* (an orbit's members
    share their codes) and directions *transform* with M (member j is reconstructed
    as ``M^j`` applied to the canonical-frame decoding). The paper names three
    ``loss_type`` s and gives no formulas in the seed; we implement each as a complete
    objective over all pairs (i, j) of members, so that member j's code must explain
    every member i of its orbit:

    ``latent_inv`` (invariance imposed on the codes)
        ``z_j = E(a_j)``, ``D(z_j)`` is a canonical-frame latent, and
        ``L = mean_{i,j} ||a_i - M^i D(z_j)||^2``.
        The encoder sees each member as it is, so it must learn to give the four
        rotations the same code; the reconstruction of member j is ``M^j D(z_j)``.
        Which member is canonical must then be visible in the data (upright shapes,
        :class:`~monoscope.equivariant.shapes.ShapesConfig` ``canonical_orientation``);
        otherwise the codes can only explain what an orbit's members share.
    ``canonical`` (invariance by canonicalising the encoder's input)
        ``z_j = E(M^{-j} a_j)`` and ``L = mean_{i,j} ||a_i - M^i D(z_j)||^2``.
        The codes are invariant as far as M is exact; the encoder needs each member's
        group element j (known for orbit data), which is why the orbit is the unit.
    ``output_inv`` (invariance imposed on the outputs, compared after mapping back)
        ``z_j = E(a_j)``, ``D(z_j)`` is in member j's own frame, and
        ``L = mean_{i,j} ||M^{-i} a_i - M^{-j} D(z_j)||^2``:
        every member's reconstruction, mapped back to the canonical frame, must match
        every member's canonicalised latent. Equivalently (expand the square)
        ``mean_j ||mean_i M^{-i} a_i - M^{-j} D(z_j)||^2`` plus a constant: the mapped-back
        outputs must all equal the orbit's average canonical latent. This is the
        weakest prior: the codes need not be invariant, only their decodings
        consistent under M. The reconstruction of member j is ``D(z_j)``.

    ``b_d`` lives in the canonical frame for ``latent_inv`` and ``canonical`` (it is added
    before ``M^j``) and is initialised to the mean canonicalised latent; the
    pre-encoder subtraction uses the same ``b_d`` for every member.

``archetypal`` (Fel et al. 2025, *Archetypal SAE*)
    The dictionary is tied to the data: atom ``i`` (column i of W_d) is
    ``sum_c softmax(logits_i)_c C_c`` with C ``[n_centroids, d]`` the k-means centroids
    (scikit-learn ``KMeans``, seeded) of the training latents (minus the initial ``b_d``
    when ``pre_encoder_bias``), i.e. a convex combination of centroids, plus, for the
    relaxed variant (``relaxation`` = delta > 0), an offset of norm at most delta
    (projected after every step). Atoms are *not* normalised: rescaling would leave the
    convex hull that is the point of the constraint, and with non-negative codes the
    scale is absorbed by the encoder. Loss as vanilla. Each atom's logits start at
    ``log(n_centroids)`` on one centroid (distinct centroids while there are enough) and
    0 elsewhere, i.e. with about half its weight on one archetype, so atoms do not all
    start at the centroids' mean.

Training (:func:`train_orbit_sae`): Adam on batches of orbits, the batch order of each
epoch drawn from ``(seed, epoch)``; resumable from a checkpoint (bit for bit on CPU);
unit-norm decoder columns kept by removing the gradient along each column before the
step and renormalising after it. An orbit SAE is the ``orbit`` variant of the dictionary
base (:mod:`monoscope.sae.base`): it is written and read with
:func:`monoscope.sae.save_sae` and :func:`monoscope.sae.load_sae` like every SAE, and
evaluated with the shared metrics of :mod:`monoscope.sae.metrics`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from monoscope.checkpoints import CheckpointKind, Epoch, train_epochs
from monoscope.config import RecordConfig, check_fields, one_of
from monoscope.equivariant.orbits import check_orbit_size
from monoscope.equivariant.symmetry import symmetry_powers, to_canonical
from monoscope.sae.base import SparseAutoencoder, register_sae
from monoscope.sae.metrics import DictionaryMetrics
from monoscope.sae.parts import ENCODERS, ArchetypalDictionary, FreeDictionary, TopKSparsifier

log = logging.getLogger(__name__)

FAMILIES = ("vanilla", "equivariant", "archetypal")
LOSS_TYPES = ("latent_inv", "canonical", "output_inv")
PLAIN_LOSS = "mse"
ENCODER_TYPES = ("linear", "nonlinear")
CHECKPOINT_KIND = "equivariant_orbit_sae_checkpoint"
CHECKPOINTS = CheckpointKind(CHECKPOINT_KIND)
_SHUFFLE_STREAM = 0


# ---------------------------------------------------------------------- config


@dataclass(frozen=True)
class OrbitSAEConfig(RecordConfig):
    """Options of an orbit SAE and its training (paper flag names in brackets).

    Parameters
    ----------
    family : ``vanilla``, ``equivariant`` or ``archetypal``.
    loss_type : for ``equivariant`` one of :data:`LOSS_TYPES` (required); the other
        families take ``mse`` (``None`` resolves to it) [--sae-loss-type].
    k : codes kept per vector [--sae-topk].
    expansion : K = round(expansion * d) features, unless ``num_features`` is set
        [--sae-expansion; --sae-latent-dim sets num_features].
    encoder_type : ``nonlinear`` (one ReLU hidden layer) or ``linear`` [--sae-enc-type].
    hidden_dim : H, the nonlinear encoder's hidden width [--sae-hidden-dim].
    unit_decoder : keep decoder columns at unit norm [--sae-unit-decoder]; ``None``
        resolves to True, except for ``archetypal`` (whose atoms are convex combinations
        and must be False).
    pre_encoder_bias : subtract b_d before encoding [--pre-encoder-bias].
    n_centroids : k-means centroids of the archetypal dictionary [--n-arch-clusters].
    relaxation : delta, the bound on the norm of the archetypal atoms' free offset
        (0: atoms are exact convex combinations). Ignored by other families.
    lr, epochs, batch_size : Adam, and the length of training in epochs over orbits;
        a batch holds ``batch_size`` orbits [--learning-rate, --epochs, --batch-size].
    seed : seeds initialisation, k-means and the batch order [--seed].
    """

    section: ClassVar[str] = "sae"

    family: str = "vanilla"
    loss_type: str | None = None
    k: int = 8
    expansion: float = 4.0
    num_features: int | None = None
    encoder_type: str = "nonlinear"
    hidden_dim: int = 128
    unit_decoder: bool | None = None
    pre_encoder_bias: bool = True
    n_centroids: int = 2048
    relaxation: float = 0.0
    lr: float = 5e-4
    epochs: int = 100
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self, ("family", one_of(FAMILIES)))
        if self.family == "equivariant":
            if self.loss_type not in LOSS_TYPES:
                raise ValueError(
                    f"sae.loss_type must be one of {LOSS_TYPES} for the equivariant family, "
                    f"got {self.loss_type!r}"
                )
        else:
            if self.loss_type is None:
                object.__setattr__(self, "loss_type", PLAIN_LOSS)
            if self.loss_type != PLAIN_LOSS:
                raise ValueError(
                    f"sae.loss_type must be '{PLAIN_LOSS}' (or null) for the {self.family} "
                    f"family, got {self.loss_type!r}; the losses {LOSS_TYPES} belong to "
                    "family: equivariant"
                )
        if self.unit_decoder is None:
            object.__setattr__(self, "unit_decoder", self.family != "archetypal")
        if self.family == "archetypal" and self.unit_decoder:
            raise ValueError(
                "sae.unit_decoder must be false for the archetypal family: its atoms are "
                "convex combinations of centroids, which normalising would break"
            )
        check_fields(
            self,
            ("encoder_type", one_of(ENCODER_TYPES)),
            ("k", "positive"),
            ("expansion", "positive and finite"),
            ("num_features", "positive or null"),
            ("hidden_dim n_centroids", "positive"),
            ("relaxation", ">= 0 and finite"),
            ("lr", "positive and finite"),
            ("epochs batch_size", "positive"),
            ("seed", ">= 0"),
        )
        if self.num_features is not None and self.k > self.num_features:
            raise ValueError(f"sae.k ({self.k}) exceeds sae.num_features ({self.num_features})")

    def features_for(self, input_dim: int) -> int:
        """K for inputs of dimension ``input_dim``."""
        if self.num_features is not None:
            return self.num_features
        return max(1, round(self.expansion * input_dim))

    @property
    def name(self) -> str:
        """A short label: the family, with the loss type for equivariant SAEs."""
        return f"equivariant_{self.loss_type}" if self.family == "equivariant" else self.family


# ---------------------------------------------------------------------- the model


@register_sae("orbit")
class OrbitSAE(SparseAutoencoder):
    """A TopK SAE of one family on orbits (see the module docstring for the notation).

    The dictionary base (:class:`~monoscope.sae.base.SparseAutoencoder`) with the parts
    the family asks for: a ``linear`` or ``nonlinear`` encoder (:attr:`encoding`; a linear
    one is tied to the initial dictionary except for archetypal SAEs), the ``topk``
    sparsifier without auxiliary loss, and a ``free`` dictionary (unit-norm columns when
    ``unit_decoder``) or, for ``archetypal``, an ``archetypal`` one. What is orbit-specific
    lives here: encoding and decoding whole orbits with the symmetry M and the loss types.

    Parameters are the fields of :class:`OrbitSAEConfig` that shape the model, plus the
    input dimension d, the feature count K and the orbit size n.

    Attributes
    ----------
    encoding, sparsifier, dictionary, decoder_bias : the parts and b_d ``[d]``;
        ``dictionary()`` gives W_d for every family.
    symmetry : buffer M ``[d, d]`` (equivariant only; identity until set).
    """

    inputs = "orbits"

    hyperparameters = (
        "num_features",
        "k",
        "orbit_size",
        "family",
        "loss_type",
        "encoder_type",
        "hidden_dim",
        "unit_decoder",
        "pre_encoder_bias",
        "n_centroids",
        "relaxation",
    )

    def __init__(
        self,
        input_dim: int,
        num_features: int,
        k: int,
        orbit_size: int = 4,
        family: str = "vanilla",
        loss_type: str = PLAIN_LOSS,
        encoder_type: str = "nonlinear",
        hidden_dim: int = 128,
        unit_decoder: bool = True,
        pre_encoder_bias: bool = True,
        n_centroids: int = 0,
        relaxation: float = 0.0,
    ) -> None:
        if input_dim < 1 or num_features < 1:
            raise ValueError(
                f"input_dim and num_features must be positive, got {input_dim}, {num_features}"
            )
        if not 1 <= k <= num_features:
            raise ValueError(f"k must be in [1, num_features={num_features}], got {k}")
        check_orbit_size(orbit_size)
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got '{family}'")
        if family == "archetypal" and n_centroids < 1:
            raise ValueError("an archetypal SAE needs n_centroids >= 1")
        encoder_options = {"hidden_dim": hidden_dim} if encoder_type == "nonlinear" else {}
        encoder = ENCODERS[encoder_type](input_dim, num_features, **encoder_options)
        if family == "archetypal":
            dictionary = ArchetypalDictionary(input_dim, num_features, n_centroids, relaxation)
        else:
            dictionary = FreeDictionary(input_dim, num_features, unit_norm=unit_decoder)
        # The orbit losses have no dead-feature term: the TopK step alone.
        sparsifier = TopKSparsifier(input_dim, num_features, k, aux_coef=0.0)
        super().__init__(
            input_dim,
            encoder,
            sparsifier,
            dictionary,
            init="tied" if encoder.tieable and family != "archetypal" else "random",
            pre_encoder_bias=pre_encoder_bias,
        )
        self.orbit_size, self.family, self.loss_type = orbit_size, family, loss_type
        self.encoder_type, self.hidden_dim = encoder_type, hidden_dim
        self.n_centroids = n_centroids if family == "archetypal" else 0
        self.relaxation = relaxation
        if family == "equivariant":
            self.register_buffer("symmetry", torch.eye(input_dim))

    @property
    def k(self) -> int:
        return self.sparsifier.k

    # -------------------------------------------------------------- orbits

    def _powers(self) -> torch.Tensor:
        return symmetry_powers(self.symmetry, self.orbit_size)

    def _check_orbit(self, orbit: torch.Tensor) -> None:
        if orbit.ndim != 3 or orbit.shape[1:] != (self.orbit_size, self.input_dim):
            raise ValueError(
                f"expected orbit latents [B, {self.orbit_size}, {self.input_dim}], got "
                f"{list(orbit.shape)}"
            )

    def encode_orbit(self, orbit: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, n, K]`` of every member of orbits ``[B, n, d]``.

        The ``canonical`` loss type encodes ``M^{-j} a_j``; every other SAE encodes
        ``a_j`` as it is.
        """
        self._check_orbit(orbit)
        if self.loss_type == "canonical":
            orbit = to_canonical(orbit, self.symmetry)
        return self.encode(orbit)

    def decode_orbit(self, codes: torch.Tensor) -> torch.Tensor:
        """Member-wise reconstructions ``[B, n, d]`` from codes ``[B, n, K]``.

        ``latent_inv`` and ``canonical`` decode to the canonical frame and move member j's
        decoding by ``M^j``; the others decode in the member's own frame.
        """
        decoded = self.decode(codes)
        if self.loss_type in ("latent_inv", "canonical"):
            return torch.einsum("bjd,jed->bje", decoded, self._powers())
        return decoded

    def reconstruct_orbit(self, orbit: torch.Tensor) -> torch.Tensor:
        """Member-wise reconstructions ``[B, n, d]`` of orbits ``[B, n, d]``."""
        return self.decode_orbit(self.encode_orbit(orbit))

    def forward(self, orbit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstructions [B, n, d], codes [B, n, K])``."""
        codes = self.encode_orbit(orbit)
        return self.decode_orbit(codes), codes

    # -------------------------------------------------------------- the loss

    def loss_and_codes(self, orbit: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Loss terms (``loss``, the objective; ``mse``, the member-wise reconstruction
        error, detached) and the codes ``[B, n, K]``."""
        codes = self.encode_orbit(orbit)
        decoded = self.decode(codes)  # [B, n, d]
        if self.loss_type in ("latent_inv", "canonical"):
            # predicted[b, i, j] = M^i D(z_j): member j's code, shown in member i's frame.
            predicted = torch.einsum("bjd,ied->bije", decoded, self._powers())
            loss = (orbit[:, :, None, :] - predicted).pow(2).sum(dim=-1).mean()
            members = torch.diagonal(predicted, dim1=1, dim2=2).transpose(1, 2)
        elif self.loss_type == "output_inv":
            targets = to_canonical(orbit, self.symmetry)  # M^{-i} a_i
            outputs = to_canonical(decoded, self.symmetry)  # M^{-j} D(z_j)
            loss = (targets[:, :, None, :] - outputs[:, None, :, :]).pow(2).sum(dim=-1).mean()
            members = decoded
        else:
            members = decoded
            loss = (orbit - members).pow(2).sum(dim=-1).mean()
        mse = (orbit - members).detach().pow(2).sum(dim=-1).mean()
        return {"loss": loss, "mse": mse}, codes


def build_orbit_sae(config: OrbitSAEConfig, input_dim: int, orbit_size: int) -> OrbitSAE:
    """A new SAE from ``config`` (initialised from the global generator)."""
    num_features = config.features_for(input_dim)
    if config.k > num_features:
        raise ValueError(f"sae.k ({config.k}) exceeds the {num_features} features")
    return OrbitSAE(
        input_dim,
        num_features,
        config.k,
        orbit_size=orbit_size,
        family=config.family,
        loss_type=str(config.loss_type),
        encoder_type=config.encoder_type,
        hidden_dim=config.hidden_dim,
        unit_decoder=bool(config.unit_decoder),
        pre_encoder_bias=config.pre_encoder_bias,
        n_centroids=config.n_centroids,
        relaxation=config.relaxation,
    )


# ---------------------------------------------------------------------- data-dependent init


@torch.no_grad()
def init_from_data(sae: OrbitSAE, latents: torch.Tensor, seed: int) -> None:
    """Set b_d to the mean training vector (canonicalised for ``latent_inv`` and
    ``canonical``) and, for archetypal SAEs, the centroids (k-means of the training
    vectors, minus b_d when ``pre_encoder_bias``)."""
    frames = (
        to_canonical(latents, sae.symmetry)
        if sae.loss_type in ("latent_inv", "canonical")
        else latents
    )
    sae.init_from_data(frames.reshape(-1, sae.input_dim), "mean")
    if sae.family == "archetypal":
        centred = latents.reshape(-1, sae.input_dim)
        if sae.pre_encoder_bias:
            centred = centred - sae.decoder_bias
        sae.dictionary.fit_centroids_(centred, seed)


# ---------------------------------------------------------------------- training


def _check_latents(latents: torch.Tensor) -> None:
    if latents.ndim != 3 or not latents.is_floating_point():
        raise ValueError(f"expected float orbit latents [N, n, d], got {list(latents.shape)}")
    check_orbit_size(latents.shape[1])
    if latents.shape[0] < 1:
        raise ValueError("no orbit latents to train on")


def train_orbit_sae(
    latents: torch.Tensor,
    config: OrbitSAEConfig,
    symmetry: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[OrbitSAE, list[dict[str, Any]]]:
    """Train an SAE of ``config.family`` on orbit latents ``[N, n, d]``.

    Parameters
    ----------
    latents : training orbits (float).
    config : the options.
    symmetry : M ``[d, d]``, required by (only) the equivariant family
        (:func:`monoscope.equivariant.symmetry.fit_symmetry`).
    device : where to train.
    checkpoint : a file rewritten after every epoch; when it exists training resumes
        from it (same config, except possibly a larger ``epochs``; same M).
    progress : show a tqdm bar over steps.

    Returns
    -------
    ``(sae in eval mode on device, history)``; one history record per epoch with
    ``epoch``, ``steps``, ``loss`` and ``mse`` (means over the epoch's orbits), ``l0``
    (mean nonzero codes per vector), ``dead_fraction`` (features that did not fire in the
    epoch) and ``seconds``.
    """
    _check_latents(latents)
    device = torch.device(device)
    count, orbit_size, dim = latents.shape
    if config.family == "equivariant":
        if symmetry is None:
            raise ValueError("the equivariant family needs the latent action M (symmetry=...)")
        if symmetry.shape != (dim, dim):
            raise ValueError(f"symmetry must be [{dim}, {dim}], got {list(symmetry.shape)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        sae = build_orbit_sae(config, dim, orbit_size)
    if config.family == "equivariant":
        sae.symmetry.copy_(symmetry.float())
    if checkpoint is None or not Path(checkpoint).exists():  # a resume restores these
        init_from_data(sae, latents.float(), config.seed)
        sae.apply_constraints_()
    sae.to(device)
    optimizer = torch.optim.Adam(sae.parameters(), lr=config.lr)

    def run_epoch(epoch: Epoch) -> dict[str, Any]:
        order = torch.randperm(count, generator=epoch.generator(_SHUFFLE_STREAM))
        sums = {"loss": 0.0, "mse": 0.0, "l0": 0.0}
        fired = torch.zeros(sae.num_features, dtype=torch.bool, device=device)
        for start in range(0, count, config.batch_size):
            batch = latents[order[start : start + config.batch_size]].to(device, torch.float32)
            terms, codes = sae.loss_and_codes(batch)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if sae.unit_decoder:
                sae.remove_parallel_decoder_grad_()
            optimizer.step()
            sae.apply_constraints_()
            active = codes.detach() != 0
            fired |= active.reshape(-1, sae.num_features).any(dim=0)
            sums["loss"] += float(terms["loss"].detach()) * len(batch)
            sums["mse"] += float(terms["mse"]) * len(batch)
            sums["l0"] += float(active.sum(dim=-1).float().mean()) * len(batch)
            epoch.advance()
        return {
            **{key: value / count for key, value in sums.items()},
            "steps": epoch.step,
            "dead_fraction": float((~fired).float().mean()),
        }

    history = train_epochs(
        run_epoch,
        CHECKPOINTS,
        sae,
        optimizer,
        config,
        steps_per_epoch=-(-count // config.batch_size),
        checkpoint=checkpoint,
        extra=_SameSymmetry(sae, symmetry) if config.family == "equivariant" else None,
        rebuild={"sae": sae.config},
        desc=f"sae {config.name}",
        progress=progress,
        diverged_hint="lower sae.lr",
    )
    return sae.eval(), history


@dataclass
class _SameSymmetry:
    """Refuses a checkpoint trained with another M (no state of its own)."""

    sae: OrbitSAE
    symmetry: torch.Tensor

    def save(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, {}

    def load(self, tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
        if not torch.equal(self.sae.symmetry.cpu(), self.symmetry.float().cpu()):
            raise ValueError("the checkpoint was trained with another M; delete it to start afresh")


# ---------------------------------------------------------------------- evaluation


@torch.no_grad()
def encode_orbits(sae: OrbitSAE, latents: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Codes ``[N, n, K]`` (float32, CPU) of orbit latents ``[N, n, d]``, batch by batch."""
    _check_latents(latents)
    device = sae.decoder_bias.device
    sae.eval()
    parts = [
        sae.encode_orbit(latents[start : start + batch_size].to(device, torch.float32)).cpu()
        for start in range(0, latents.shape[0], batch_size)
    ]
    return torch.cat(parts)


@torch.no_grad()
def evaluate_orbit_sae(
    sae: OrbitSAE, latents: torch.Tensor, batch_size: int = 1024
) -> dict[str, float]:
    """Reconstruction and sparsity of ``sae`` on orbit latents ``[N, n, d]``.

    Returns
    -------
    ``fvu`` (fraction of variance unexplained by the member-wise reconstructions, over
    all member vectors), ``mse`` (mean over vectors of the squared error summed over d),
    ``normalized_mse`` (``sum ||a - a_hat||^2 / sum ||a||^2``), ``l0`` (mean nonzero codes
    per vector), ``dead_fraction`` (features that never fire on these data) and
    ``orbit_code_variance`` (share of the codes' variance that lies within orbits:
    0 for perfectly rotation-invariant codes). FVU, L0 and the dead fraction are those of
    :class:`monoscope.sae.metrics.DictionaryMetrics` over the member vectors.
    """
    _check_latents(latents)
    device = sae.decoder_bias.device
    sae.eval()
    reconstructions, codes = [], []
    for start in range(0, latents.shape[0], batch_size):
        batch = latents[start : start + batch_size].to(device, torch.float32)
        rebuilt, code = sae(batch)
        reconstructions.append(rebuilt.cpu())
        codes.append(code.cpu())
    a = latents.reshape(-1, latents.shape[-1]).double()
    a_hat = torch.cat(reconstructions).reshape(-1, latents.shape[-1]).double()
    z = torch.cat(codes).double()  # [N, n, K]
    within = (z - z.mean(dim=1, keepdim=True)).pow(2).sum()
    flat = z.reshape(-1, z.shape[-1])
    total = (flat - flat.mean(dim=0)).pow(2).sum()
    # One update with every vector: the FVU's variance is then the one-pass sum.
    accumulator = DictionaryMetrics()
    accumulator.update(a, a_hat, flat)
    shared = accumulator.result()
    return {
        "fvu": shared["fvu"],
        # The mean of per-vector errors (not DictionaryMetrics' total / count, which may
        # differ in the last bit), as the published tables were computed.
        "mse": float((a - a_hat).pow(2).sum(dim=1).mean()),
        "normalized_mse": float((a - a_hat).pow(2).sum() / a.pow(2).sum().clamp_min(1e-300)),
        "l0": shared["l0"],
        "dead_fraction": shared["dead_fraction"],
        "orbit_code_variance": float(within / total.clamp_min(1e-300)),
    }


def orbit_codes_as_rows(codes: torch.Tensor) -> np.ndarray:
    """Codes ``[N, n, K]`` as a float32 array ``[N * n, K]`` in orbit-major order (the
    row order of the images of a :class:`~monoscope.equivariant.shapes.ShapesDataset`)."""
    return codes.reshape(-1, codes.shape[-1]).float().numpy()
