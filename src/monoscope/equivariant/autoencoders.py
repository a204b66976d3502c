"""Base autoencoders (MLP, CNN, small ViT) whose latents the SAEs explain.

The paper trains image autoencoders of three architectures on the shapes and asks how
an SAE on their latent space (dimension 256) sees the data's rotation symmetry. No
architecture here is equivariant by construction; training with random quarter-turn
augmentation (as the paper's ``--ae-augment``) only encourages the latents of the four
rotations to be related, and :mod:`monoscope.equivariant.symmetry` measures how well a
single linear map relates them.

Every model has ``encode(x) -> [B, latent_dim]`` and ``decode(h) -> [B, 3, S, S]`` in
``[0, 1]`` (sigmoid output). Architectures register by name in :data:`ARCHITECTURES`, a
:class:`~monoscope.registry.Registry` of builders ``(config, image_size) -> model``;
:func:`build_autoencoder` makes one from an :class:`AutoencoderConfig`. Training (:func:`train_autoencoder`) minimises the pixel MSE
with Adam, is seeded and resumable (:mod:`monoscope.checkpoints`). A trained
model file (:func:`save_autoencoder`) is a safetensors state dict whose metadata holds
the config and the image size, so :func:`load_autoencoder` rebuilds it without
unpickling.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from monoscope import checkpoints
from monoscope.config import RecordConfig, check_fields, one_of
from monoscope.equivariant.orbits import QUARTER_TURNS, check_orbit_size, rotate_images
from monoscope.registry import Registry

log = logging.getLogger(__name__)

ARCHITECTURES: Registry[Callable[[AutoencoderConfig, int], ImageAutoencoder]] = Registry(
    "autoencoder architecture"
)
CHECKPOINTS = checkpoints.CheckpointKind("equivariant_autoencoder_checkpoint")
MODEL_KIND = "equivariant_autoencoder"
CHANNELS = 3
_SHUFFLE_STREAM, _AUGMENT_STREAM = 0, 1


class ImageAutoencoder(nn.Module):
    """Interface: ``encode`` images ``[B, 3, S, S]`` to latents, ``decode`` them back."""

    latent_dim: int

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction, latent)``."""
        h = self.encode(x)
        return self.decode(h), h


@dataclass(frozen=True)
class ViTConfig:
    """The ViT autoencoder's shape.

    Parameters
    ----------
    patch_size : side of a patch (must divide the image size).
    dim : token width.
    depth : transformer layers, of the encoder and of the decoder each.
    heads : attention heads (must divide ``dim``).
    """

    patch_size: int = 4
    dim: int = 64
    depth: int = 2
    heads: int = 4

    def __post_init__(self) -> None:
        check_fields(self, ("patch_size dim depth heads", "positive"), section="autoencoder.vit")
        if self.dim % self.heads:
            raise ValueError(
                f"autoencoder.vit.dim ({self.dim}) must be divisible by vit.heads ({self.heads})"
            )


@dataclass(frozen=True)
class AutoencoderConfig(RecordConfig):
    """Options of a base autoencoder and its training.

    Parameters
    ----------
    architecture : ``mlp``, ``cnn`` or ``vit`` (:data:`ARCHITECTURES`).
    latent_dim : the latent dimension (the paper's ``--ae-latent-dim``, 256).
    hidden_dim : width of the MLP's hidden layer.
    width : channels of the CNN's first convolution (doubled at each of 3 stride-2 steps).
    vit : the ViT's shape (:class:`ViTConfig`).
    epochs, batch_size, lr : Adam on the pixel MSE; the last incomplete batch is used.
    augment : rotate each training image by a random multiple of a quarter turn (the
        paper's ``--ae-augment``), drawn per sample from the epoch's generator.
    seed : seeds initialisation, batch order and augmentation.
    """

    section: ClassVar[str] = "autoencoder"

    architecture: str = "mlp"
    latent_dim: int = 256
    hidden_dim: int = 512
    width: int = 32
    vit: ViTConfig = field(default_factory=ViTConfig)
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(
            self,
            ("architecture", one_of(sorted(ARCHITECTURES))),
            ("latent_dim hidden_dim width", "positive"),
            ("epochs batch_size", "positive"),
            ("lr", "positive and finite"),
            ("seed", ">= 0"),
        )
        if not isinstance(self.vit, ViTConfig):
            raise ValueError("autoencoder.vit must be a ViTConfig (build it with from_mapping)")


# ---------------------------------------------------------------------- architectures


class MLPAutoencoder(ImageAutoencoder):
    """Flatten -> hidden (ReLU) -> latent; latent -> hidden (ReLU) -> pixels (sigmoid)."""

    def __init__(self, image_size: int, latent_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.image_size, self.latent_dim = image_size, latent_dim
        pixels = CHANNELS * image_size * image_size
        self.encoder = nn.Sequential(
            nn.Flatten(),
            nn.Linear(pixels, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, pixels),
            nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(h).view(-1, CHANNELS, self.image_size, self.image_size)


class CNNAutoencoder(ImageAutoencoder):
    """Three stride-2 3x3 convolutions (ReLU) and a linear map to the latent; mirrored.

    The image size must be divisible by 8.
    """

    def __init__(self, image_size: int, latent_dim: int, width: int) -> None:
        super().__init__()
        if image_size % 8:
            raise ValueError(
                f"the cnn autoencoder needs an image size divisible by 8, got {image_size}"
            )
        self.image_size, self.latent_dim = image_size, latent_dim
        self.bottom = image_size // 8
        channels = (CHANNELS, width, 2 * width, 4 * width)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
        self.encoder = nn.Sequential(
            *layers, nn.Flatten(), nn.Linear(channels[-1] * self.bottom**2, latent_dim)
        )
        self.project = nn.Linear(latent_dim, channels[-1] * self.bottom**2)
        up: list[nn.Module] = []
        reversed_channels = channels[::-1]
        for index, (c_in, c_out) in enumerate(
            zip(reversed_channels[:-1], reversed_channels[1:], strict=True)
        ):
            up.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            up.append(nn.ReLU() if index < len(reversed_channels) - 2 else nn.Sigmoid())
        self.decoder = nn.Sequential(*up)
        self.width = width

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        grid = torch.relu(self.project(h)).view(-1, 4 * self.width, self.bottom, self.bottom)
        return self.decoder(grid)


class ViTAutoencoder(ImageAutoencoder):
    """A small ViT: patch embedding, transformer, mean pool -> latent; and back.

    Decoding adds the projected latent to learned per-patch queries, runs a second
    transformer and maps each token to its patch's pixels. Dropout is zero, so training
    is deterministic given the seed.
    """

    def __init__(
        self, image_size: int, latent_dim: int, patch_size: int, dim: int, depth: int, heads: int
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(
                f"the vit autoencoder needs patch_size ({patch_size}) to divide the image "
                f"size ({image_size})"
            )
        self.image_size, self.latent_dim, self.patch_size = image_size, latent_dim, patch_size
        self.grid = image_size // patch_size
        tokens = self.grid**2
        self.embed = nn.Conv2d(CHANNELS, dim, patch_size, stride=patch_size)
        self.position = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.encoder = self._transformer(dim, depth, heads)
        self.to_latent = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, latent_dim))
        self.from_latent = nn.Linear(latent_dim, dim)
        self.queries = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.decoder = self._transformer(dim, depth, heads)
        self.to_pixels = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, CHANNELS * patch_size * patch_size)
        )

    @staticmethod
    def _transformer(dim: int, depth: int, heads: int) -> nn.TransformerEncoder:
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.position
        return self.to_latent(self.encoder(tokens).mean(dim=1))

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        tokens = self.decoder(self.queries + self.from_latent(h)[:, None, :])
        patches = torch.sigmoid(self.to_pixels(tokens))  # [B, grid^2, C p p]
        b, p, g = h.shape[0], self.patch_size, self.grid
        patches = patches.view(b, g, g, CHANNELS, p, p).permute(0, 3, 1, 4, 2, 5)
        return patches.reshape(b, CHANNELS, g * p, g * p)


@ARCHITECTURES.register("mlp")
def _build_mlp(config: AutoencoderConfig, image_size: int) -> ImageAutoencoder:
    return MLPAutoencoder(image_size, config.latent_dim, config.hidden_dim)


@ARCHITECTURES.register("cnn")
def _build_cnn(config: AutoencoderConfig, image_size: int) -> ImageAutoencoder:
    return CNNAutoencoder(image_size, config.latent_dim, config.width)


@ARCHITECTURES.register("vit")
def _build_vit(config: AutoencoderConfig, image_size: int) -> ImageAutoencoder:
    return ViTAutoencoder(
        image_size,
        config.latent_dim,
        config.vit.patch_size,
        config.vit.dim,
        config.vit.depth,
        config.vit.heads,
    )


def build_autoencoder(config: AutoencoderConfig, image_size: int) -> ImageAutoencoder:
    """A new (randomly initialised, from the global generator) model for ``image_size``."""
    return ARCHITECTURES[config.architecture](config, image_size)


# ---------------------------------------------------------------------- training


def random_rotations(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image turned by its own random multiple of a quarter turn (exact)."""
    turns = torch.randint(0, QUARTER_TURNS, (images.shape[0],), generator=generator)
    rotated = images.clone()
    for k in range(1, QUARTER_TURNS):
        chosen = turns == k
        if bool(chosen.any()):
            rotated[chosen] = torch.rot90(images[chosen], k, dims=(-2, -1))
    return rotated


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != CHANNELS or images.shape[2] != images.shape[3]:
        raise ValueError(f"expected square RGB images [N, 3, S, S], got {list(images.shape)}")
    if not images.is_floating_point():
        raise ValueError("expected float images in [0, 1]; convert uint8 images with x / 255")


def train_autoencoder(
    images: torch.Tensor,
    config: AutoencoderConfig,
    device: torch.device | str = "cpu",
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[ImageAutoencoder, list[dict[str, Any]]]:
    """Train a base autoencoder on float images ``[N, 3, S, S]`` in ``[0, 1]``.

    Parameters
    ----------
    images : the training images (for the shapes, the canonical images: augmentation
        supplies the rotations).
    config : what to train, and how.
    device : where to train.
    checkpoint : a file rewritten after every epoch; when it exists training resumes
        from it (same config, except possibly a larger ``epochs``).
    progress : show a tqdm bar over steps.

    Returns
    -------
    ``(model in eval mode on device, history)``; history has one record per epoch with
    ``epoch``, ``loss`` (mean pixel MSE over the epoch's samples) and ``seconds``.
    """
    _check_images(images)
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_autoencoder(config, images.shape[-1])
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    count = images.shape[0]

    def run_epoch(epoch: checkpoints.Epoch) -> dict[str, Any]:
        order = torch.randperm(count, generator=epoch.generator(_SHUFFLE_STREAM))
        augment_generator = epoch.generator(_AUGMENT_STREAM)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for start in range(0, count, config.batch_size):
            batch = images[order[start : start + config.batch_size]]
            if config.augment:
                batch = random_rotations(batch, augment_generator)
            batch = batch.to(device)
            reconstruction, _ = model(batch)
            loss = (reconstruction - batch).pow(2).mean()
            checkpoints.optimizer_step(optimizer, loss)
            loss_sum += loss.detach().double() * batch.shape[0]
            epoch.advance()
        return {"loss": float(loss_sum) / count}

    history = AUTOENCODER_FILES.train_epochs(
        run_epoch,
        model,
        optimizer,
        config,
        steps_per_epoch=-(-count // config.batch_size),
        checkpoint=checkpoint,
        desc=f"autoencoder {config.architecture}",
        progress=progress,
        diverged_hint="lower autoencoder.lr",
    )
    return model.eval(), history


# ---------------------------------------------------------------------- latents


@torch.no_grad()
def encode_images(
    model: ImageAutoencoder,
    images: torch.Tensor,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Latents float32 ``[N, latent_dim]`` (on the CPU) of float images ``[N, 3, S, S]``."""
    _check_images(images)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval().to(device)
    parts = [
        model.encode(images[start : start + batch_size].to(device)).float().cpu()
        for start in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(parts) if parts else torch.empty(0, model.latent_dim)


@torch.no_grad()
def orbit_latents(
    model: ImageAutoencoder,
    images: torch.Tensor,
    orbit_size: int = 4,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Latents ``[N, n, latent_dim]`` of the orbits of canonical images ``[N, 3, S, S]``.

    Member j is the latent of ``g^j x`` (:func:`~monoscope.equivariant.orbits.rotate_images`);
    the rotations are made batch by batch, so memory stays at one batch of images.
    """
    check_orbit_size(orbit_size)
    members = [
        encode_images(model, rotate_images(images, j, orbit_size), batch_size, device)
        for j in range(orbit_size)
    ]
    return torch.stack(members, dim=1)


# ---------------------------------------------------------------------- files


# save_autoencoder(path, model, config, history) writes tensors model/<name> with the
# kind, config and image size; load_autoencoder(path, device) returns (model in eval
# mode on device, config, history) from that file or from a training checkpoint.
AUTOENCODER_FILES = checkpoints.TrainedModelFormat(
    MODEL_KIND,
    CHECKPOINTS,
    AutoencoderConfig,
    lambda config, record: build_autoencoder(config, int(record["image_size"])),
    "base autoencoder",
    "monoscope.equivariant.autoencoders.save_autoencoder or train_autoencoder's checkpoint",
    entries=lambda model: {"image_size": int(model.image_size)},
)
save_autoencoder = AUTOENCODER_FILES.save
load_autoencoder = AUTOENCODER_FILES.load
