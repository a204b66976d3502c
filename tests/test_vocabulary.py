"""The label vocabulary (monoscope.vocabulary) against hand computations, and the text
tower of open_clip embedders with random weights."""

import numpy as np
import pytest
import torch

from monoscope.embedders import Embedder, EmbedderConfig, build_embedder
from monoscope.semantics import class_prototypes
from monoscope.vocabulary import (
    Vocabulary,
    VocabularyConfig,
    first_of_each_class,
    imagenet_words,
    load_vocabulary,
    prototype_vocabulary,
    resolve_source,
    save_vocabulary,
    text_vocabulary,
    vocabulary_words,
)


def _text_vector(text: str) -> torch.Tensor:
    """A deterministic 4-d vector per text (its character codes folded)."""
    codes = torch.tensor([float(ord(c)) for c in text])
    return torch.stack([codes[i::4].sum() for i in range(4)]) + 1.0


def fake_embedder(with_text: bool) -> Embedder:
    """Images -> their per-channel means (3-d, padded to 4); texts -> _text_vector."""
    module = torch.nn.Linear(1, 1)

    def forward(x):
        return torch.cat([x.mean(dim=(2, 3)), torch.ones(len(x), 1)], dim=1)

    def text_forward(texts):
        return torch.stack([_text_vector(text) for text in texts])

    return Embedder(
        "fake", forward, module, 4, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
        text_forward=text_forward if with_text else None,
    )  # fmt: skip


class TinyDataset:
    """Images of constant colour per sample; ``labels`` per position."""

    def __init__(self, labels):
        self.labels = np.asarray(labels)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, position):
        value = (position + 1) / (len(self) + 1)
        image = torch.full((3, 4, 4), value)
        image[0] = self.labels[position] / 10
        return image, int(self.labels[position]), position


def test_first_of_each_class_keeps_order_and_count():
    labels = np.array([2, 0, 2, 1, 0, 2, 0])
    assert first_of_each_class(labels, 2).tolist() == [0, 1, 2, 3, 4]
    assert first_of_each_class(labels, 1).tolist() == [0, 1, 3]
    assert first_of_each_class(labels, 9).tolist() == list(range(7))


def test_text_vocabulary_is_the_normalised_mean_of_normalised_templates():
    templates = ("a {}.", "the {} here")
    vocabulary = text_vocabulary(fake_embedder(True), ["cat", "dog"], templates)
    assert vocabulary.names == ["cat", "dog"] and vocabulary.source == "text"
    for row, word in enumerate(["cat", "dog"]):
        vectors = [_text_vector(t.format(word)).double() for t in templates]
        mean = sum(v / v.norm() for v in vectors) / len(vectors)
        torch.testing.assert_close(vocabulary.embeddings[row], mean / mean.norm())


def test_prototype_vocabulary_uses_the_first_images_of_each_class():
    labels = [1, 0, 1, 0, 1, 0, 1]
    dataset = TinyDataset(labels)
    embedder = fake_embedder(False)
    vocabulary = prototype_vocabulary(embedder, dataset, ["zero", "one"], 2, batch_size=3)
    positions = [0, 1, 2, 3]  # the first two of each class
    images = torch.stack([dataset[p][0] for p in positions])
    expected = class_prototypes(embedder(images), torch.tensor([labels[p] for p in positions]), 2)
    torch.testing.assert_close(vocabulary.embeddings, expected)
    assert vocabulary.names == ["zero", "one"] and vocabulary.source == "prototypes"


def test_a_class_without_images_is_named():
    with pytest.raises(ValueError, match=r"classes \[2\]"):
        prototype_vocabulary(fake_embedder(False), TinyDataset([0, 1]), ["a", "b", "c"], 5)


def test_source_resolution_and_its_errors():
    assert resolve_source(VocabularyConfig(), fake_embedder(True)) == "text"
    assert resolve_source(VocabularyConfig(), fake_embedder(False)) == "prototypes"
    assert (
        resolve_source(VocabularyConfig(source="prototypes"), fake_embedder(True)) == "prototypes"
    )
    with pytest.raises(ValueError, match="embeds no text"):
        resolve_source(VocabularyConfig(source="text"), fake_embedder(False))
    with pytest.raises(ValueError, match="one '\\{\\}'"):
        VocabularyConfig(templates=("no placeholder",))


def test_vocabulary_words(tmp_path):
    assert vocabulary_words("classes", ["tabby_cat", "7"]) == ["tabby cat", "7"]
    # ImageNet class folders are WordNet ids: their labels are the synsets' first lemmas.
    assert vocabulary_words("classes", ["n01440764", "n02123045"]) == ["tench", "tabby"]
    words = imagenet_words()
    assert len(words) == len(set(words)) > 1000
    assert "tabby" in words and "entity" in words
    listed = tmp_path / "words.txt"
    listed.write_text("stripes\n\ndots\nstripes\n")
    assert vocabulary_words(str(listed), []) == ["stripes", "dots"]
    with pytest.raises(FileNotFoundError, match="labels.words"):
        vocabulary_words(str(tmp_path / "missing.txt"), [])


def test_vocabulary_file_round_trip_and_foreign_file(tmp_path):
    vocabulary = Vocabulary(torch.eye(3, 4), ["a", "b", "c"], "prototypes")
    save_vocabulary(tmp_path / "v.safetensors", vocabulary, {"embedder": "judge"})
    loaded, metadata = load_vocabulary(tmp_path / "v.safetensors")
    torch.testing.assert_close(loaded.embeddings, vocabulary.embeddings)
    assert loaded.names == vocabulary.names and metadata["embedder"] == "judge"
    from monoscope.io import save_tensors

    save_tensors(tmp_path / "other.safetensors", {"x": torch.zeros(1)})
    with pytest.raises(ValueError, match="not a vocabulary file"):
        load_vocabulary(tmp_path / "other.safetensors")


def test_open_clip_projected_pooling_embeds_text_in_the_image_space():
    projected = build_embedder(
        "clip", EmbedderConfig("open_clip", "random", arch="RN50", pooling="projected")
    )
    assert projected.has_text
    texts = projected.embed_texts(["a photo of a cat.", "a photo of a dog."])
    images = projected(torch.rand(1, 3, 64, 64))
    assert texts.shape == (2, images.shape[1])
    vocabulary = text_vocabulary(projected, ["cat"], ("a photo of a {}.",))
    torch.testing.assert_close(
        vocabulary.embeddings[0].float(), torch.nn.functional.normalize(texts[0], dim=0)
    )
    hidden = build_embedder("clip", EmbedderConfig("open_clip", "random", arch="RN50"))
    assert not hidden.has_text
    with pytest.raises(ValueError, match="no text tower"):
        hidden.embed_texts(["cat"])
