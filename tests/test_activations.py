"""Activation datasets: pooling, shards on disk, streamed reading; direction crops."""

import numpy as np
import pytest
import torch

from monoscope.activations import (
    ActivationConfig,
    ActivationStore,
    collect_activations,
    pool_activations,
    save_activation_shard,
)
from monoscope.crops import direction_heatmaps, position_heatmaps
from monoscope.data import shard_positions


def test_pooling_mean_max_and_patches():
    output = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 2, 2)
    mean, rows = pool_activations(output, "mean")
    assert torch.equal(mean, output.mean(dim=(2, 3))) and rows.tolist() == [0, 1]
    maximum, _ = pool_activations(output, "max")
    assert torch.equal(maximum, output.amax(dim=(2, 3)))
    generator = torch.Generator().manual_seed(0)
    patches, rows = pool_activations(output, "patch", 5, generator)
    assert patches.shape == (10, 3) and rows.tolist() == [0] * 5 + [1] * 5
    flat = output.flatten(2)
    for vector, row in zip(patches, rows, strict=True):  # every patch is a real position
        assert any(torch.equal(vector, flat[row, :, q]) for q in range(4))
    with pytest.raises(ValueError, match="pooling"):
        ActivationConfig(pooling="median")


@pytest.fixture(scope="module")
def shards(tmp_path_factory, small_digits, random_demo):
    """Two activation shards of layer4 and layer3 of the random demo CNN."""
    _, dataset = small_digits
    folder = tmp_path_factory.mktemp("activations")
    is_train = np.arange(len(dataset)) % 4 != 0
    paths = {"layer3": [], "layer4": []}
    for shard in (1, 2):
        positions = shard_positions(len(dataset), shard, 2)
        collected = collect_activations(
            random_demo,
            dataset,
            ["layer3", "layer4"],
            ActivationConfig(),
            is_train,
            positions=positions,
        )
        for layer, tensors in collected.items():
            path = folder / f"{layer}_{shard}.safetensors"
            save_activation_shard(path, tensors, {"layer": layer})
            paths[layer].append(path)
    return dataset, is_train, paths


def test_collected_vectors_equal_a_plain_forward(shards, random_demo):
    dataset, is_train, paths = shards
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.no_grad():
        net = random_demo.net
        x = random_demo.normalize(images)
        x = net.layer3(net.layer2(net.layer1(net.relu(net.bn1(net.conv1(x))))))
    store = ActivationStore(paths["layer3"])
    vectors, ids, labels = map(torch.cat, zip(*store.iter_labelled(37), strict=True))
    assert torch.equal(ids, torch.as_tensor(dataset.sample_ids).long())
    assert torch.equal(labels, torch.as_tensor(dataset.labels).long())
    assert torch.allclose(vectors, x.mean(dim=(2, 3)), atol=1e-5)


def test_store_splits_shuffle_and_mean(shards):
    _, is_train, paths = shards
    train = ActivationStore(paths["layer4"], "train", buffer_rows=50)
    test = ActivationStore(paths["layer4"], "test")
    assert train.num_samples == int(is_train.sum()) and test.num_samples == int((~is_train).sum())
    assert train.dim == 8
    ordered = torch.cat(list(train.iter_batches(16)))
    shuffled = torch.cat(list(train.iter_batches(16, shuffle=True, seed=3)))
    again = torch.cat(list(train.iter_batches(16, shuffle=True, seed=3)))
    assert torch.equal(shuffled, again)  # seeded
    assert not torch.equal(shuffled, ordered)  # shuffled across the whole store ...
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(shuffled) == key(ordered)  # ... and every row exactly once
    # Global mixing: the first buffer holds rows of both shards.
    first = shuffled[:50]
    halves = ordered[: train.counts[0]], ordered[train.counts[0] :]
    assert all(any((row == half).all(1).any() for row in first) for half in halves)
    assert torch.allclose(train.mean(), ordered.mean(dim=0), atol=1e-6)


def test_store_errors(tmp_path, shards):
    _, _, paths = shards
    with pytest.raises(FileNotFoundError, match="missing"):
        ActivationStore([tmp_path / "missing.safetensors"])
    with pytest.raises(ValueError, match="disagree"):
        ActivationStore([paths["layer3"][0], paths["layer4"][0]])
    with pytest.raises(ValueError, match="split"):
        ActivationStore(paths["layer4"], "validation")


def test_direction_heatmap_of_a_channel_is_its_positions_averaged(random_demo, small_digits):
    # LRP is linear in the initial relevance: the direction e_j starts a_j(q) / |q| at
    # every position q, so its heatmap is the mean of the single-position heatmaps.
    _, dataset = small_digits
    images = torch.stack([dataset[i][0] for i in range(2)])
    channel, positions = 3, 8 * 8
    direction = torch.zeros(2, 8)
    direction[:, channel] = 1.0
    combined = direction_heatmaps(random_demo, images, "layer4", direction)
    singles = torch.stack(
        [
            position_heatmaps(
                random_demo, images, "layer4", torch.full((2,), channel), torch.full((2,), q)
            )
            for q in range(positions)
        ]
    ).mean(dim=0)
    assert torch.allclose(combined, singles, atol=1e-6 * singles.abs().max().item() + 1e-9)
    with pytest.raises(ValueError, match="channels"):
        direction_heatmaps(random_demo, images, "layer4", torch.ones(2, 5))


@pytest.mark.parametrize(
    "name, layers, channels",
    [
        ("torchvision:googlenet", ["inception4a", "inception5b"], [512, 1024]),
        ("torchvision:resnet18", ["layer3", "layer4"], [256, 512]),
        ("timm:resnet18", ["layer4"], [512]),
    ],
)
def test_inception_and_resnet_layers_give_one_vector_per_image(name, layers, channels):
    from monoscope.data import InMemoryDataset
    from monoscope.models import ModelConfig, load_model

    torch.manual_seed(0)
    model = load_model(ModelConfig(name, "random"))
    images = torch.rand(3, 3, 64, 64)
    dataset = InMemoryDataset(images, torch.arange(3))
    collected = collect_activations(
        model, dataset, layers, ActivationConfig(batch_size=2), np.ones(3, dtype=bool)
    )
    for layer, width in zip(layers, channels, strict=True):
        assert collected[layer]["activations"].shape == (3, width)
    # inception5b's output is the concatenation of its four branches, as the seed uses.
    if name.endswith("googlenet"):
        block = model.net.inception5b
        with torch.no_grad():
            x = model.net.inception5a(torch.zeros(1, 832, 2, 2))
            parts = [block.branch1(x), block.branch2(x), block.branch3(x), block.branch4(x)]
            assert torch.equal(block(x), torch.cat(parts, dim=1))


def test_embedding_no_crops_gives_an_empty_tensor_of_the_embedding_width():
    from monoscope.embedders import Embedder, embed_images

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    embedder = Embedder("toy", net, net, 8, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    empty = embed_images(embedder, torch.zeros(0, 4, 3, 8, 8, dtype=torch.uint8))
    assert empty.shape == (0, 4, 5)
