"""Reference collection against brute-force and independent computations."""

import numpy as np
import pytest
import torch

from monoscope.data import shard_positions
from monoscope.references import (
    EMPTY_ID,
    ReferenceConfig,
    RunningTopN,
    TopReferences,
    canonizers_for,
    collect_references,
    load_references,
    merge_reference_files,
    merge_references,
    relevance_scores,
    save_references,
    select_top,
    spatial_max,
)


def brute_force_top(ids: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: sort all samples by (score descending, id ascending), keep n."""
    out_ids, out_scores = [], []
    for row in scores:
        order = np.lexsort((ids, -row))[:n]
        out_ids.append(ids[order])
        out_scores.append(row[order])
    return np.stack(out_ids), np.stack(out_scores)


def test_select_top_orders_by_score_then_id():
    ids = torch.tensor([[5, 3, 9, 1]])
    scores = torch.tensor([[1.0, 2.0, 2.0, 0.5]])
    positions = torch.tensor([[50, 30, 90, 10]])
    top_ids, top_scores, top_positions = select_top(ids, scores, positions, 3)
    assert top_ids.tolist() == [[3, 9, 5]]
    assert top_scores.tolist() == [[2.0, 2.0, 1.0]]
    assert top_positions.tolist() == [[30, 90, 50]]


@pytest.mark.parametrize("batch_sizes", [[7] * 20, [1, 50, 3, 60, 26], [140]])
def test_running_top_n_equals_brute_force_with_ties(batch_sizes):
    rng = np.random.default_rng(0)
    total, channels, n = sum(batch_sizes), 6, 12
    ids = rng.permutation(total) + 100  # ids in random stream order
    scores = rng.integers(0, 5, size=(channels, total)).astype(np.float32)  # many ties
    running = RunningTopN(n)
    start = 0
    for size in batch_sizes:
        batch = slice(start, start + size)
        positions = torch.from_numpy(ids[batch])[:, None].expand(size, channels) * 10
        running.update(
            torch.from_numpy(ids[batch]), torch.from_numpy(scores[:, batch].T), positions
        )
        start += size
    result = running.result()
    want_ids, want_scores = brute_force_top(ids, scores, n)
    np.testing.assert_array_equal(result.sample_ids.numpy(), want_ids)
    np.testing.assert_array_equal(result.scores.numpy(), want_scores)
    np.testing.assert_array_equal(result.positions.numpy(), want_ids * 10)


def test_merge_of_shards_equals_whole_and_pads_short_shards():
    rng = np.random.default_rng(1)
    ids, scores = np.arange(50), rng.normal(size=(4, 50)).astype(np.float32)
    parts = []
    for shard in range(1, 5):
        window = shard_positions(50, shard, 4)
        running = RunningTopN(20)  # more than a shard holds: padded with empty slots
        running.update(
            torch.from_numpy(ids[window.start : window.stop]),
            torch.from_numpy(scores[:, window.start : window.stop].T),
            torch.zeros(len(window), 4, dtype=torch.int64),
        )
        part = running.result()
        assert (part.sample_ids == EMPTY_ID).any()
        parts.append(part)
    merged = merge_references(parts, 20)
    want_ids, _ = brute_force_top(ids, scores, 20)
    np.testing.assert_array_equal(merged.sample_ids.numpy(), want_ids)
    assert merged.filled()


def test_spatial_max_and_relevance_scores_by_hand():
    activation = torch.tensor([[[[1.0, 4.0], [3.0, -2.0]], [[0.0, 0.0], [5.0, 1.0]]]])
    scores, positions = spatial_max(activation)
    assert scores.tolist() == [[4.0, 5.0]]
    assert positions.tolist() == [[1, 2]]
    relevance = torch.tensor([[[[1.0, -3.0], [0.5, 0.5]], [[2.0, 0.0], [0.0, 0.0]]]])
    scores, positions = relevance_scores(relevance, abs_norm=False)
    assert scores.tolist() == [[-1.0, 2.0]]
    assert positions.tolist() == [[0, 0]]
    scores, _ = relevance_scores(relevance, abs_norm=True)
    torch.testing.assert_close(scores, torch.tensor([[-1.0 / 3.0, 2.0 / 3.0]]))
    flat_scores, flat_positions = spatial_max(torch.tensor([[1.0, 2.0]]))
    assert flat_scores.tolist() == [[1.0, 2.0]] and flat_positions.tolist() == [[0, 0]]
    with pytest.raises(ValueError, match="expected"):
        spatial_max(torch.zeros(2, 3, 4))


def hand_written_actmax(model, dataset, layer: str):
    """Plain forward hook over the whole data set in one batch: [N, C] maxima and argmaxes."""
    captured = {}
    handle = model.layer(layer).register_forward_hook(lambda m, i, o: captured.update(out=o))
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.no_grad():
        model.net(model.normalize(images))
    handle.remove()
    flat = captured["out"].flatten(2)
    return flat.amax(dim=2).numpy(), flat.argmax(dim=2).numpy(), tuple(captured["out"].shape[2:])


@pytest.mark.parametrize("layer", ["layer3", "layer4"])
def test_actmax_equals_a_hand_written_forward_hook(random_demo, small_digits, layer):
    _, dataset = small_digits
    config = ReferenceConfig(n=15, modes=("actmax",), batch_size=37)
    result = collect_references(random_demo, dataset, [layer, "layer2"], config)[("actmax", layer)]
    maxima, argmaxes, shape = hand_written_actmax(random_demo, dataset, layer)
    ids = dataset.sample_ids.numpy()
    want_ids, want_scores = brute_force_top(ids, maxima.T, 15)
    np.testing.assert_array_equal(result.sample_ids.numpy(), want_ids)
    np.testing.assert_allclose(result.scores.numpy(), want_scores, rtol=1e-5, atol=1e-6)
    rows = dataset.position_of(want_ids.reshape(-1)).reshape(want_ids.shape)
    want_positions = np.take_along_axis(argmaxes.T, rows, axis=1)
    np.testing.assert_array_equal(result.positions.numpy(), want_positions)
    assert result.spatial_shape == shape


def test_sharded_collection_gives_identical_indices(random_demo, small_digits, tmp_path):
    _, dataset = small_digits
    config = ReferenceConfig(n=10, modes=("actmax", "relmax"), batch_size=32)
    whole = collect_references(random_demo, dataset, ["layer4"], config)
    paths = []
    for shard in range(1, 4):
        part = collect_references(
            random_demo,
            dataset,
            ["layer4"],
            config,
            positions=shard_positions(len(dataset), shard, 3),
        )
        paths.append(tmp_path / f"{shard}-of-3.safetensors")
        save_references(
            paths[-1], part, {"n_samples": len(shard_positions(len(dataset), shard, 3))}
        )
    merged, metadata = merge_reference_files(paths, 10)
    assert metadata["n_samples"] == len(dataset)
    for key in whole:
        assert torch.equal(merged[key].sample_ids, whole[key].sample_ids), key
        assert torch.equal(merged[key].positions, whole[key].positions), key
        torch.testing.assert_close(merged[key].scores, whole[key].scores)


def test_relmax_equals_an_independent_zennit_computation(random_demo, small_digits):
    from zennit.composites import EpsilonPlusFlat

    _, dataset = small_digits
    config = ReferenceConfig(n=8, modes=("relmax",), batch_size=64, relmax_abs_norm=True)
    result = collect_references(random_demo, dataset, ["layer4"], config)[("relmax", "layer4")]

    # Independent: a zennit composite, the layer output's gradient under it is the
    # relevance; start at the true-class logit (its value), sum over space, abs-norm.
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = dataset.labels
    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["out"] = output

    handle = random_demo.layer("layer4").register_forward_hook(keep)
    composite = EpsilonPlusFlat(canonizers=canonizers_for(random_demo.net))
    inputs = random_demo.normalize(images).requires_grad_(True)
    with composite.context(random_demo.net):
        logits = random_demo.net(inputs)
        start = torch.zeros_like(logits)
        start[torch.arange(len(labels)), labels] = logits[torch.arange(len(labels)), labels]
        logits.backward(start)
    handle.remove()
    relevance = captured["out"].grad.flatten(2).sum(dim=2)
    relevance = relevance / (relevance.abs().sum(dim=1, keepdim=True) + 1e-10)
    want_ids, want_scores = brute_force_top(dataset.sample_ids.numpy(), relevance.T.numpy(), 8)
    np.testing.assert_array_equal(result.sample_ids.numpy(), want_ids)
    np.testing.assert_allclose(result.scores.numpy(), want_scores, rtol=1e-4, atol=1e-6)


def test_relmax_target_outside_the_outputs_is_a_clear_error(small_digits):
    from monoscope.models import ModelConfig, load_model

    _, dataset = small_digits
    five_outputs = load_model(ModelConfig("demo_cnn", "random", num_classes=5))
    with pytest.raises(ValueError, match="relmax_target: prediction"):
        collect_references(
            five_outputs, dataset, ["layer4"], ReferenceConfig(n=4, modes=("relmax",))
        )
    by_prediction = ReferenceConfig(n=4, modes=("relmax",), relmax_target="prediction")
    result = collect_references(five_outputs, dataset, ["layer4"], by_prediction)
    assert result[("relmax", "layer4")].filled()


def test_reference_files_round_trip_and_too_large_n(tmp_path):
    top = TopReferences(
        torch.tensor([[3, 1], [2, EMPTY_ID]]),
        torch.tensor([[2.0, 1.0], [0.5, float("-inf")]]),
        torch.tensor([[4, 0], [1, 0]]),
        (3, 3),
    )
    save_references(tmp_path / "r.safetensors", {("actmax", "layer4"): top}, {"n_samples": 3})
    loaded, metadata = load_references(tmp_path / "r.safetensors")
    assert metadata["n_samples"] == 3
    assert torch.equal(loaded[("actmax", "layer4")].sample_ids, top.sample_ids)
    assert loaded[("actmax", "layer4")].spatial_shape == (3, 3)
    with pytest.raises(ValueError, match="references.n = 2 is larger"):
        merge_reference_files([tmp_path / "r.safetensors"], 2)


def test_reference_config_validation():
    with pytest.raises(ValueError, match="modes"):
        ReferenceConfig(modes=("maxact",))
    with pytest.raises(ValueError, match="references.n"):
        ReferenceConfig(n=0)


def test_foreign_or_incomplete_reference_file_is_named(tmp_path):
    from monoscope.io import TensorFileError, save_tensors

    foreign = tmp_path / "foreign.safetensors"
    save_tensors(foreign, {"weight": torch.zeros(2)}, {"kind": "model"})
    with pytest.raises(TensorFileError, match=r"foreign\.safetensors: not a references file"):
        load_references(foreign)
    partial = tmp_path / "partial.safetensors"
    save_tensors(
        partial,
        {"actmax/layer4/sample_ids": torch.zeros(1, 1, dtype=torch.long)},
        {"spatial_shapes": {"actmax/layer4": [1, 1]}},
    )
    with pytest.raises(TensorFileError, match=r"missing \['actmax/layer4/scores'"):
        load_references(partial)
