"""The vocabulary that labels units: named vectors in an embedder's space.

A unit's label is the vocabulary entry nearest to its references' mean embedding
(:func:`monoscope.semantics.label_units`). Two sources, as in SemanticLens:

* ``text``: for an embedder with a text tower (CLIP with ``projected`` pooling), each
  word through every prompt template, the normalised mean of the template vectors;
* ``prototypes``: for an image-only embedder (the demo's judge, a VGG layer), the mean
  direction of each class's images (:func:`monoscope.semantics.class_prototypes`); the
  words are the data set's class names.

``auto`` picks ``text`` where the embedder has a text tower, else ``prototypes``. Text
words are the data set's class names (``classes``), the ImageNet-1k classes with their
WordNet hypernyms (``imagenet``: the first lemma of every synset of the committed tree,
1,817 entries), or a file of one word per line.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from monoscope.embedders import Embedder, embed_batches
from monoscope.io import load_tensors, save_tensors
from monoscope.logs import progress_kwargs
from monoscope.semantics import class_prototypes

log = logging.getLogger(__name__)

SOURCES = ("auto", "text", "prototypes")
# Prompt templates of CLIP's zero-shot ImageNet evaluation, a few of its 80.
DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a drawing of a {}.",
)


@dataclass(frozen=True)
class VocabularyConfig:
    """How units get their labels.

    Parameters
    ----------
    source : ``auto``, ``text`` or ``prototypes`` (see the module docs).
    words : text only: ``classes``, ``imagenet`` or the path of a file with one word per
        line.
    templates : text only: prompts with one ``{}`` for the word.
    images_per_class : prototypes only: the first images of each class (in sample-id
        order) whose mean direction is its prototype.
    top : labels kept per unit, best first.
    """

    source: str = "auto"
    words: str = "classes"
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    images_per_class: int = 50
    top: int = 3

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"labels.source must be one of {SOURCES}, got '{self.source}'")
        object.__setattr__(self, "templates", tuple(self.templates))
        bad = [template for template in self.templates if template.count("{}") != 1]
        if not self.templates or bad:
            raise ValueError(f"labels.templates need one '{{}}' each, got {bad or 'none'}")
        if self.images_per_class < 1:
            raise ValueError(
                f"labels.images_per_class must be positive, got {self.images_per_class}"
            )
        if self.top < 1:
            raise ValueError(f"labels.top must be positive, got {self.top}")


@dataclass
class Vocabulary:
    """Unit-length vectors ``[V, D]`` named by ``names``, and where they came from."""

    embeddings: torch.Tensor
    names: list[str]
    source: str

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.names):
            raise ValueError(
                f"a vocabulary needs one vector per name: {tuple(self.embeddings.shape)} vectors "
                f"for {len(self.names)} names"
            )
        if len(self.names) == 0:
            raise ValueError("a vocabulary needs at least one entry")


def resolve_source(config: VocabularyConfig, embedder: Embedder) -> str:
    """``text`` or ``prototypes`` for this embedder; ``text`` without a text tower is an error."""
    if config.source == "auto":
        return "text" if embedder.has_text else "prototypes"
    if config.source == "text" and not embedder.has_text:
        raise ValueError(
            f"labels.source is text but embedder '{embedder.name}' embeds no text (only "
            "open_clip with pooling: projected does); use source: prototypes or auto"
        )
    return config.source


def imagenet_words() -> list[str]:
    """The first lemma of every synset of the committed ImageNet WordNet tree, readable
    (underscores as spaces), each once, in the tree's order."""
    from monoscope.hierarchy.wordnet import read_imagenet_tree

    _, lemmas = read_imagenet_tree()
    return list(dict.fromkeys(lemma.replace("_", " ") for lemma in lemmas.values()))


def readable_class_names(class_names: Sequence[str]) -> list[str]:
    """Class names as labels: underscores as spaces, and ImageNet WordNet ids (class
    folders such as ``n01440764``) as their first lemma (``tench``)."""
    names = [str(name) for name in class_names]
    if names and all(re.fullmatch(r"n\d{8}", name) for name in names):
        from monoscope.hierarchy.wordnet import read_imagenet_tree

        _, lemmas = read_imagenet_tree()
        names = [lemmas.get(name, name) for name in names]
    return [name.replace("_", " ") for name in names]


def vocabulary_words(words: str, class_names: Sequence[str]) -> list[str]:
    """The words of ``labels.words``: the class names, ImageNet's, or a file's lines."""
    if words == "classes":
        return readable_class_names(class_names)
    if words == "imagenet":
        return imagenet_words()
    path = Path(words).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"labels.words: no file {path}; give 'classes', 'imagenet' or a file of one word "
            "per line"
        )
    entries = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    entries = list(dict.fromkeys(entry for entry in entries if entry))
    if not entries:
        raise ValueError(f"labels.words: {path} has no words")
    return entries


def text_vocabulary(
    embedder: Embedder, words: Sequence[str], templates: Sequence[str], batch_size: int = 256
) -> Vocabulary:
    """Each word through every template; its vector is the normalised mean of the
    normalised template vectors (CLIP's zero-shot classifier)."""
    prompts = [template.format(word) for word in words for template in templates]
    vectors = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc=f"{embedder.name} text", unit="batch", **progress_kwargs()):
        vectors.append(embedder.embed_texts(prompts[start : start + batch_size]).cpu())
    rows = torch.nn.functional.normalize(torch.cat(vectors).double(), dim=-1)
    means = rows.reshape(len(words), len(templates), -1).mean(dim=1)
    return Vocabulary(torch.nn.functional.normalize(means, dim=-1), list(words), "text")


def first_of_each_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Positions of the first ``per_class`` entries of every label value, in order."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.arange(len(labels)) - starts
    return np.sort(order[rank < per_class])


def prototype_vocabulary(
    embedder: Embedder,
    dataset,
    class_names: Sequence[str],
    images_per_class: int,
    batch_size: int = 64,
) -> Vocabulary:
    """Class prototypes from the first ``images_per_class`` images of each class.

    ``dataset`` yields ``(unnormalised image, label, sample_id)`` and has ``labels`` (one
    per position); a class without images is an error naming it.
    """
    labels = np.asarray(dataset.labels)
    positions = first_of_each_class(labels, images_per_class)

    def batches():
        for start in range(0, len(positions), batch_size):
            chunk = positions[start : start + batch_size]
            yield torch.stack([dataset[int(position)][0] for position in chunk])

    image_shape = tuple(dataset[int(positions[0])][0].shape) if len(positions) else (3, 1, 1)
    vectors = embed_batches(
        embedder,
        batches(),
        image_shape,
        -(-len(positions) // batch_size),
        f"{embedder.name} classes",
    )
    try:
        prototypes = class_prototypes(vectors, torch.as_tensor(labels[positions]), len(class_names))
    except ValueError as error:
        raise ValueError(f"class prototypes of {embedder.name}: {error}") from error
    return Vocabulary(prototypes, readable_class_names(class_names), "prototypes")


def save_vocabulary(path: str | os.PathLike, vocabulary: Vocabulary, metadata: dict) -> None:
    save_tensors(
        path,
        {"embeddings": vocabulary.embeddings.float().contiguous()},
        metadata | {"names": vocabulary.names, "source": vocabulary.source},
    )


def load_vocabulary(path: str | os.PathLike) -> tuple[Vocabulary, dict]:
    """The vocabulary of :func:`save_vocabulary` and its metadata."""
    tensors, metadata = load_tensors(path)
    if "embeddings" not in tensors or "names" not in metadata or "source" not in metadata:
        raise ValueError(
            f"{path} is not a vocabulary file: expected 'embeddings' with 'names' and 'source' "
            "in its metadata"
        )
    return Vocabulary(tensors["embeddings"], list(metadata["names"]), metadata["source"]), metadata
