"""Sparse autoencoders: losses and codes against NumPy, training, resampling, files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors import safe_open

from monoscope.config import from_mapping
from monoscope.sae import (
    DICTIONARIES,
    ENCODERS,
    L1SAE,
    SAE_VARIANTS,
    SPARSIFIERS,
    DictionaryMetrics,
    ResampleConfig,
    SAEConfig,
    SparseAutoencoder,
    TensorStore,
    TopKSAE,
    build_sae,
    draw_samples,
    evaluate_sae,
    feature_activations,
    geometric_median,
    load_sae,
    read_sae,
    register_sae,
    resample_dead_features,
    save_sae,
    train_sae,
)
from monoscope.sae.resample import RESAMPLE_ENCODER_SCALE


def synthetic_sparse(num_samples: int = 2048, dim: int = 8, atoms: int = 16, seed: int = 0):
    """``dim``-d data from ``atoms`` unit ground-truth directions, each active with p = 0.1."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(atoms, dim, generator=generator)
    directions /= directions.norm(dim=1, keepdim=True)
    active = torch.rand(num_samples, atoms, generator=generator) < 0.1
    sizes = 0.5 + torch.rand(num_samples, atoms, generator=generator)
    offset = torch.linspace(-1.0, 1.0, dim)  # a non-zero centre for b_d to find
    return (active * sizes) @ directions + offset


@pytest.fixture(scope="module")
def sparse_store() -> TensorStore:
    return TensorStore(synthetic_sparse())


def randomised(sae: SparseAutoencoder, seed: int = 0) -> SparseAutoencoder:
    """``sae`` with every parameter drawn at random (biases included), decoder unit-norm."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    sae.normalize_decoder_()
    return sae


def numpy_params(sae: SparseAutoencoder):
    return (
        sae.encoder.detach().double().numpy(),
        sae.encoder_bias.detach().double().numpy(),
        sae.decoder.detach().double().numpy(),
        sae.decoder_bias.detach().double().numpy(),
    )


def assert_same_state(first: SparseAutoencoder, second: SparseAutoencoder) -> None:
    one, two = first.state_dict(), second.state_dict()
    assert one.keys() == two.keys()
    for key in one:
        assert torch.equal(one[key], two[key]), key


def without_seconds(history: dict) -> dict:
    return {
        **history,
        "epochs": [{k: v for k, v in e.items() if k != "seconds"} for e in history["epochs"]],
    }


# --------------------------------------------------------------------------- the models


def test_l1_loss_matches_numpy():
    sae = randomised(L1SAE(5, 7, l1_coefficient=0.3), seed=1)
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(2))
    terms, codes = sae.loss_and_codes(x)

    w_e, b_e, w_d, b_d = numpy_params(sae)
    xs = x.double().numpy()
    f = np.maximum(0.0, (xs - b_d) @ w_e.T + b_e)
    x_hat = f @ w_d.T + b_d
    mse = np.mean(np.sum((xs - x_hat) ** 2, axis=1))
    l1 = np.mean(np.sum(np.abs(f), axis=1))
    assert (f > 0).any() and (f == 0).any()  # both sides of the ReLU are exercised
    np.testing.assert_allclose(codes.detach().numpy(), f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(terms["mse"].item(), mse, rtol=1e-5)
    np.testing.assert_allclose(terms["l1"].item(), l1, rtol=1e-5)
    np.testing.assert_allclose(terms["loss"].item(), mse + 0.3 * l1, rtol=1e-5)
    np.testing.assert_allclose(sae(x)[0].detach().numpy(), x_hat, rtol=1e-5, atol=1e-5)
    assert set(sae.loss(x)) == {"loss", "mse", "l1"}


def test_topk_codes_equal_a_brute_force_sort():
    k = 3
    sae = randomised(TopKSAE(6, 10, k=k), seed=3)
    x = torch.randn(20, 6, generator=torch.Generator().manual_seed(4))
    codes = sae.encode(x).detach().numpy()
    pre = sae.pre_activations(x).detach().double().numpy()
    expected = np.zeros_like(pre)
    for row in range(len(pre)):
        kept = np.argsort(-pre[row])[:k]  # the k largest, by a full sort
        expected[row, kept] = np.maximum(pre[row, kept], 0.0)
    np.testing.assert_allclose(codes, expected, rtol=1e-5, atol=1e-6)
    assert ((codes != 0).sum(axis=1) <= k).all()
    assert ((pre > 0).sum(axis=1) > k).any() and (pre < 0).any()

    # Exactly k entries are kept before the ReLU: with all pre-activations positive,
    # every row has exactly k nonzero codes.
    with torch.no_grad():
        sae.encoder_bias.fill_(100.0)
    assert ((sae.encode(x) != 0).sum(dim=1) == k).all()


def test_topk_aux_loss_is_zero_when_nothing_is_dead():
    sae = randomised(TopKSAE(6, 12, k=2, dead_tokens=5), seed=5)
    x = torch.randn(9, 6, generator=torch.Generator().manual_seed(6))
    terms = sae.loss(x)
    assert terms["aux"].item() == 0.0
    assert terms["loss"].item() == terms["mse"].item()


def test_topk_aux_loss_uses_only_dead_latents():
    d, n_features, k, k_aux, aux_coef = 6, 12, 2, 3, 0.25
    sae = randomised(TopKSAE(d, n_features, k=k, k_aux=k_aux, aux_coef=aux_coef, dead_tokens=50))
    dead = np.zeros(n_features, dtype=bool)
    dead[[1, 4, 6, 9, 11]] = True
    with torch.no_grad():
        sae.samples_since_fired.copy_(torch.where(torch.from_numpy(dead), 50, 49))
    x = torch.randn(8, d, generator=torch.Generator().manual_seed(7))
    terms = sae.loss(x)

    w_e, b_e, w_d, b_d = numpy_params(sae)
    xs = x.double().numpy()
    pre = (xs - b_d) @ w_e.T + b_e
    z = np.zeros_like(pre)
    z_aux = np.zeros_like(pre)
    for row in range(len(pre)):
        top = np.argsort(-pre[row])[:k]
        z[row, top] = np.maximum(pre[row, top], 0)
        dead_ids = np.flatnonzero(dead)
        top_dead = dead_ids[np.argsort(-pre[row, dead_ids])[:k_aux]]
        z_aux[row, top_dead] = np.maximum(pre[row, top_dead], 0)
    residual = xs - (z @ w_d.T + b_d)
    residual_hat = z_aux @ w_d.T  # no decoder bias
    aux = np.sum((residual - residual_hat) ** 2) / np.sum((residual - residual.mean(0)) ** 2)
    mse = np.mean(np.sum(residual**2, axis=1))
    assert aux > 0
    np.testing.assert_allclose(terms["aux"].item(), aux, rtol=1e-5)
    np.testing.assert_allclose(terms["loss"].item(), mse + aux_coef * aux, rtol=1e-5)

    # Its gradient reaches only the dead features' encoder rows and decoder columns.
    terms["aux"].backward()
    encoder_rows = sae.encoder.grad.abs().sum(dim=1).numpy()
    decoder_columns = sae.decoder.grad.abs().sum(dim=0).numpy()
    assert (encoder_rows[~dead] == 0).all() and (decoder_columns[~dead] == 0).all()
    assert (decoder_columns[dead] > 0).any()


def test_normalize_decoder_and_parallel_gradient_removal_match_numpy():
    sae = L1SAE(5, 9)
    generator = torch.Generator().manual_seed(8)
    with torch.no_grad():
        sae.decoder.copy_(3 * torch.randn(5, 9, generator=generator))
    sae.normalize_decoder_()
    np.testing.assert_allclose(sae.decoder.detach().norm(dim=0).numpy(), 1.0, atol=1e-6)

    grad = torch.randn(5, 9, generator=generator)
    sae.decoder.grad = grad.clone()
    sae.remove_parallel_decoder_grad_()
    columns = sae.decoder.detach().double().numpy()
    g = grad.double().numpy()
    expected = np.empty_like(g)
    for j in range(columns.shape[1]):
        d_j = columns[:, j]
        expected[:, j] = g[:, j] - (g[:, j] @ d_j) / (d_j @ d_j) * d_j
    result = sae.decoder.grad.double().numpy()
    np.testing.assert_allclose(result, expected, atol=1e-6)
    np.testing.assert_allclose((result * columns).sum(axis=0), 0.0, atol=1e-6)


def test_geometric_median_minimises_the_sum_of_distances():
    points = torch.randn(200, 3, generator=torch.Generator().manual_seed(9)) ** 3
    median = geometric_median(points)

    def objective(centre):
        return float((points.double() - centre).norm(dim=1).sum())

    best = objective(median)
    assert best < objective(points.double().mean(dim=0))
    for step in torch.eye(3, dtype=torch.float64) * 1e-3:
        assert best <= objective(median + step) and best <= objective(median - step)


# --------------------------------------------------------------------------- registry, files


@pytest.mark.parametrize("variant", ["l1", "topk"])
def test_save_load_round_trip(tmp_path, variant):
    config = SAEConfig(variant=variant, expansion=2, k=3, k_aux=4, l1_coefficient=0.02)
    sae = randomised(build_sae(variant, 5, config), seed=10)
    with torch.no_grad():
        sae.samples_since_fired.copy_(torch.arange(10))
    path = tmp_path / "sae.safetensors"
    save_sae(sae, path, {"history": [{"epoch": 1}]})
    loaded = load_sae(path)
    assert type(loaded) is type(sae) and loaded.config == sae.config
    assert loaded.num_features == 10 and loaded.input_dim == 5
    assert_same_state(sae, loaded)
    x = torch.randn(4, 5)
    assert torch.equal(loaded(x)[0], sae(x)[0])
    assert read_sae(path)[1] == {"config": {}, "history": [{"epoch": 1}]}
    with safe_open(str(path), framework="pt") as handle:  # plain safetensors, no pickle
        assert set(handle.keys()) == {f"model/{key}" for key in sae.state_dict()}
    assert [p.name for p in tmp_path.iterdir()] == ["sae.safetensors"]
    # Loading builds the model in a forked generator: the caller's random state is kept.
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    load_sae(path)
    assert torch.equal(torch.rand(3), expected)
    with pytest.raises(ValueError, match="reserved"):
        save_sae(sae, path, {"sae": 1})
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        load_sae(tmp_path / "nothing.safetensors")


def test_build_sae_from_a_mapping_and_registry_errors():
    sae = build_sae("topk", 4, {"num_features": 6, "k": 2})
    assert isinstance(sae, TopKSAE) and sae.k == 2 and sae.auxiliary_k == 2
    assert set(SAE_VARIANTS) >= {"l1", "topk"}
    with pytest.raises(ValueError, match="unknown option"):
        build_sae("l1", 4, {"num_features": 6, "k": 2})
    with pytest.raises(ValueError, match="unknown SAE variant"):
        build_sae("nope", 4, {"num_features": 6})
    with pytest.raises(ValueError, match="already registered"):
        register_sae("l1")(type("Other", (L1SAE,), {}))
    with pytest.raises(ValueError, match="k must be"):
        build_sae("topk", 4, SAEConfig(variant="topk", expansion=1, k=5))


# --------------------------------------------------------------------------- stores, metrics


def test_tensor_store_batches_and_samples():
    data = torch.arange(30, dtype=torch.float64).reshape(10, 3)
    store = TensorStore(data)
    in_order = torch.cat(list(store.iter_batches(4)))
    assert in_order.dtype == torch.float32 and torch.equal(in_order, data.float())
    shuffled = torch.cat(list(store.iter_batches(4, shuffle=True, seed=1)))
    assert not torch.equal(shuffled, in_order)
    assert torch.equal(shuffled[shuffled[:, 0].argsort()], in_order)
    assert torch.equal(shuffled, torch.cat(list(store.iter_batches(4, shuffle=True, seed=1))))
    assert draw_samples(store, 7, seed=2).shape == (7, 3)
    assert draw_samples(store, 50, seed=2).shape == (10, 3)


def test_metrics_equal_numpy_brute_force():
    sae = randomised(L1SAE(4, 6), seed=11)
    with torch.no_grad():
        sae.encoder_bias[[0, 3]] = -1e4  # never fire
        sae.encoder_bias[1] = 1e4  # fires on everything
    data = torch.randn(37, 4, generator=torch.Generator().manual_seed(12)) + 3.0
    store = TensorStore(data)
    metrics = evaluate_sae(sae, store, batch_size=8, dense_threshold=0.5)

    w_e, b_e, w_d, b_d = numpy_params(sae)
    xs = data.double().numpy()
    f = np.maximum(0, (xs - b_d) @ w_e.T + b_e)
    x_hat = f @ w_d.T + b_d
    error = np.sum((xs - x_hat) ** 2)
    counts = np.zeros(6)
    for row in f:  # per sample, which features fired
        counts += row != 0
    assert metrics["num_samples"] == 37
    np.testing.assert_allclose(metrics["mse"], error / 37, rtol=1e-5)
    np.testing.assert_allclose(metrics["fvu"], error / np.sum((xs - xs.mean(0)) ** 2), rtol=1e-5)
    np.testing.assert_allclose(metrics["l0"], np.count_nonzero(f) / 37)
    assert metrics["dead_fraction"] == np.mean(counts == 0) >= 2 / 6
    assert metrics["dense_fraction"] == np.mean(counts / 37 > 0.5) >= 1 / 6

    codes = torch.cat(list(feature_activations(sae, store, batch_size=5)))
    np.testing.assert_allclose(codes.numpy(), f, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- resampling


def test_resampling_sets_directions_and_zeroes_adam_state():
    sae = randomised(L1SAE(6, 12, l1_coefficient=0.01), seed=13)
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-2)
    data = torch.randn(64, 6, generator=torch.Generator().manual_seed(14))
    for _ in range(3):  # give Adam non-zero moments everywhere
        optimizer.zero_grad()
        sae.loss(data)["loss"].backward()
        optimizer.step()
    dead_ids = [1, 5, 7]
    dead = torch.zeros(12, dtype=torch.bool)
    dead[dead_ids] = True
    alive = ~dead
    before = {name: value.detach().clone() for name, value in sae.named_parameters()}
    moments = {
        (name, key): optimizer.state[parameter][key].clone()
        for name, parameter in sae.named_parameters()
        for key in ("exp_avg", "exp_avg_sq")
    }
    alive_norm = before["encoding.weight"][alive].norm(dim=1).mean()

    indices = resample_dead_features(sae, optimizer, dead, data, torch.Generator().manual_seed(15))
    assert indices.tolist() == dead_ids
    for name, parameter in sae.named_parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            state, old = optimizer.state[parameter][key], moments[(name, key)]
            if name == "encoding.weight":
                assert (state[dead] == 0).all() and torch.equal(state[alive], old[alive])
            elif name == "encoding.bias":
                assert (state[dead] == 0).all() and torch.equal(state[alive], old[alive])
            elif name == "dictionary.weight":
                assert (state[:, dead] == 0).all()
                assert torch.equal(state[:, alive], old[:, alive])
            else:
                assert torch.equal(state, old)
            assert (old != 0).any()

    columns = sae.decoder.detach()[:, dead]
    np.testing.assert_allclose(columns.norm(dim=0).numpy(), 1.0, atol=1e-6)
    candidates = data - before["decoder_bias"]
    candidates = candidates / candidates.norm(dim=1, keepdim=True)
    for column in columns.T:  # each new direction is one of the (centred) inputs
        assert torch.isclose(candidates @ column, torch.tensor(1.0), atol=1e-5).any()
    expected_rows = columns.T * RESAMPLE_ENCODER_SCALE * alive_norm
    torch.testing.assert_close(sae.encoder.detach()[dead], expected_rows)
    assert (sae.encoder_bias.detach()[dead] == 0).all()
    assert torch.equal(sae.encoder.detach()[alive], before["encoding.weight"][alive])
    assert torch.equal(sae.decoder.detach()[:, alive], before["dictionary.weight"][:, alive])


def test_resampling_draws_only_inputs_with_reconstruction_error():
    sae = L1SAE(3, 4)
    with torch.no_grad():  # codes are all zero, so the error of x is ||x||^2
        sae.encoder.zero_()
        sae.encoder_bias.zero_()
    optimizer = torch.optim.Adam(sae.parameters())
    inputs = torch.zeros(50, 3)
    inputs[17] = torch.tensor([0.0, 3.0, 4.0])
    resample_dead_features(
        sae, optimizer, torch.ones(4, dtype=torch.bool), inputs, torch.Generator().manual_seed(0)
    )
    expected = torch.tensor([0.0, 0.6, 0.8])[:, None].expand(3, 4)
    torch.testing.assert_close(sae.decoder.detach(), expected)


def test_training_with_resampling_revives_dead_features(sparse_store):
    config = SAEConfig(
        expansion=4,
        l1_coefficient=0.01,
        lr=3e-3,
        batch_size=128,
        epochs=3,
        resample=ResampleConfig(every=16, window=8, samples=512),
    )
    initial = build_sae("l1", sparse_store.dim, config)
    dead_ids = [0, 3, 10, 20]
    with torch.no_grad():
        initial.encoder_bias[dead_ids] = -1e3
    before = evaluate_sae(initial, sparse_store)
    assert before["dead_fraction"] >= len(dead_ids) / initial.num_features
    codes = torch.cat(list(feature_activations(initial, sparse_store)))
    assert (codes[:, dead_ids] == 0).all()

    sae, history = train_sae(sparse_store, config, sae=initial)
    assert history["resampled"][0]["step"] == 16
    assert set(dead_ids) <= set(history["resampled"][0]["features"])
    codes = torch.cat(list(feature_activations(sae, sparse_store)))
    assert (codes[:, dead_ids] != 0).any(dim=0).all()
    assert (initial.encoder_bias[dead_ids] == -1e3).all()  # the caller's model is untouched


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize(
    ("variant", "options"),
    [("l1", {"l1_coefficient": 0.01}), ("topk", {"k": 4})],
)
def test_training_reaches_low_fvu_on_sparse_data(sparse_store, variant, options):
    config = SAEConfig(variant=variant, expansion=4, lr=3e-3, batch_size=128, epochs=15, **options)
    sae, history = train_sae(sparse_store, config)
    metrics = evaluate_sae(sae, sparse_store)
    assert metrics["fvu"] < 0.2, metrics
    assert len(history["epochs"]) == 15
    assert history["epochs"][-1]["mse"] < history["epochs"][0]["mse"]
    np.testing.assert_allclose(sae.decoder.detach().norm(dim=0).numpy(), 1.0, atol=1e-5)
    if variant == "topk":
        assert metrics["l0"] <= 4


def test_decoder_stays_unit_norm_after_every_step(sparse_store):
    config = SAEConfig(expansion=2, batch_size=64, epochs=1, lr=1e-2)
    for epochs in (1, 2):
        sae, _ = train_sae(sparse_store, dataclasses.replace(config, epochs=epochs))
        np.testing.assert_allclose(sae.decoder.detach().norm(dim=0).numpy(), 1.0, atol=1e-5)


@pytest.mark.parametrize("variant", ["l1", "topk"])
def test_training_is_reproducible(sparse_store, variant):
    config = SAEConfig(
        variant=variant,
        expansion=2,
        k=3,
        batch_size=100,
        epochs=2,
        resample=ResampleConfig(every=10),
    )
    first, first_history = train_sae(sparse_store, config)
    second, second_history = train_sae(sparse_store, config)
    assert_same_state(first, second)
    assert without_seconds(first_history) == without_seconds(second_history)
    other, _ = train_sae(sparse_store, dataclasses.replace(config, seed=1))
    assert not torch.equal(other.decoder, first.decoder)


@pytest.mark.parametrize(
    ("variant", "options"),
    [
        # Resampling windows that cross epoch boundaries (16 steps per epoch).
        ("l1", {"resample": ResampleConfig(every=12, window=7)}),
        # A short dead window, so the auxiliary loss and its counter are in play.
        ("topk", {"k": 2, "dead_tokens": 300}),
    ],
)
def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path, sparse_store, variant, options):
    config = SAEConfig(variant=variant, expansion=4, batch_size=128, epochs=3, lr=1e-2, **options)
    torch.manual_seed(0)
    initial = build_sae(variant, sparse_store.dim, config)
    with torch.no_grad():  # dead features, so that resampling (l1) or aux (topk) acts
        initial.encoder_bias[:6] = -1e3
    uninterrupted, history = train_sae(sparse_store, config, sae=initial)
    if variant == "l1":
        assert len(history["resampled"]) >= 2, "the test should exercise resampling"
    else:
        assert any(epoch["aux"] > 0 for epoch in history["epochs"])

    checkpoint = tmp_path / "train.safetensors"
    one_epoch = dataclasses.replace(config, epochs=1)
    train_sae(sparse_store, one_epoch, checkpoint=checkpoint, sae=initial)
    assert checkpoint.exists()
    resumed, resumed_history = train_sae(sparse_store, config, checkpoint=checkpoint, sae=initial)
    assert_same_state(uninterrupted, resumed)
    assert without_seconds(resumed_history) == without_seconds(history)
    # A finished run resumes to the same model without training further.
    again, _ = train_sae(sparse_store, config, checkpoint=checkpoint, sae=initial)
    assert_same_state(uninterrupted, again)


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path, sparse_store):
    config = SAEConfig(expansion=1, batch_size=256, epochs=1)
    checkpoint = tmp_path / "train.safetensors"
    train_sae(sparse_store, config, checkpoint=checkpoint)
    with pytest.raises(ValueError, match="lr"):
        train_sae(sparse_store, dataclasses.replace(config, lr=0.5), checkpoint=checkpoint)
    train_sae(sparse_store, dataclasses.replace(config, epochs=2), checkpoint=checkpoint)
    with pytest.raises(ValueError, match="beyond"):  # now two epochs in, one asked for
        train_sae(sparse_store, config, checkpoint=checkpoint)


def test_checkpoint_resumable_says_what_train_sae_would_accept(tmp_path, sparse_store):
    from monoscope.checkpoints import checkpoint_resumable
    from monoscope.sae.train import CHECKPOINTS

    def resumable(config):
        return checkpoint_resumable(checkpoint, CHECKPOINTS, config)

    config = SAEConfig(expansion=1, batch_size=256, epochs=1)
    checkpoint = tmp_path / "train.safetensors"
    assert not resumable(config)  # none yet
    train_sae(sparse_store, config, checkpoint=checkpoint)
    assert resumable(config)
    assert resumable(dataclasses.replace(config, epochs=3))
    assert not resumable(dataclasses.replace(config, lr=0.5))
    assert not resumable(dataclasses.replace(config, epochs=0 + 1, seed=4))


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"variant": "nope"}, "variant"),
        ({"expansion": 0}, "expansion"),
        ({"l1_coefficient": -1.0}, "l1_coefficient"),
        ({"k": 0}, "k"),
        ({"k_aux": 0}, "k_aux"),
        ({"aux_coef": -0.1}, "aux_coef"),
        ({"dead_tokens": 0}, "dead_tokens"),
        ({"init": "orthogonal"}, "init"),
        ({"decoder_bias_init": "median"}, "decoder_bias_init"),
        ({"init_samples": 0}, "init_samples"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"seed": -1}, "seed"),
    ],
)
def test_config_validation_names_the_key(options, key):
    with pytest.raises(ValueError, match=rf"sae\.{key} "):
        SAEConfig(**options)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"every": -1}, "every"),
        ({"every": 5, "window": 6}, "window"),
        ({"window": -1}, "window"),
        ({"samples": 0}, "samples"),
        ({"dead_threshold": 0.0}, "dead_threshold"),
        ({"dead_threshold": 1.5}, "dead_threshold"),
    ],
)
def test_resample_validation_names_the_key(options, key):
    with pytest.raises(ValueError, match=rf"sae\.resample\.{key} "):
        ResampleConfig(**options)


def test_sae_config_builds_its_resample_group_from_a_mapping():
    config = from_mapping(SAEConfig, {"variant": "l1", "resample": {"every": 200}, "shards": 2})
    assert config.resample == ResampleConfig(every=200)
    assert config.resample.steps == 200
    with pytest.raises(ValueError, match="unknown sae config keys"):
        from_mapping(SAEConfig, {"resample_every": 200}, strict=True)


# --------------------------------------------------------------------------- parts


def test_part_registries_and_a_composition_from_them():
    assert set(ENCODERS) == {"linear", "nonlinear"}
    assert set(SPARSIFIERS) >= {"relu", "topk", "batch_topk"}
    assert set(DICTIONARIES) == {"free", "archetypal"}
    d, k = 4, 6
    torch.manual_seed(0)
    sae = SparseAutoencoder(
        d,
        ENCODERS["nonlinear"](d, k, hidden_dim=5),
        SPARSIFIERS["batch_topk"](d, k, k=2),
        DICTIONARIES["archetypal"](d, k, n_centroids=3, relaxation=0.1),
        init="random",
    )
    x = torch.randn(7, d)
    terms, codes = sae.loss_and_codes(x)
    assert set(terms) == {"loss", "mse"} and terms["loss"] == terms["mse"]
    assert codes.shape == (7, k) and (codes != 0).sum() <= 2 * 7
    assert sae.dictionary().shape == (d, k) and not sae.unit_decoder
    with pytest.raises(ValueError, match="cannot be tied"):
        SparseAutoencoder(
            d, ENCODERS["nonlinear"](d, k), SPARSIFIERS["relu"](d, k), DICTIONARIES["free"](d, k)
        )
    with pytest.raises(ValueError, match="disagree"):
        SparseAutoencoder(
            d, ENCODERS["linear"](d, k), SPARSIFIERS["relu"](d, k + 1), DICTIONARIES["free"](d, k)
        )
    with pytest.raises(ValueError, match="unknown SAE encoder"):
        ENCODERS["convolutional"]


def test_batch_topk_keeps_the_largest_entries_of_the_whole_batch():
    sparsifier = SPARSIFIERS["batch_topk"](3, 8, k=2)
    pre = torch.randn(5, 8, generator=torch.Generator().manual_seed(1)) + 0.5
    codes = sparsifier(pre)
    threshold = pre.flatten().sort(descending=True).values[2 * 5 - 1]
    assert torch.equal(codes, torch.where(pre >= threshold, pre.clamp_min(0), 0.0))
    assert (codes != 0).sum(dim=1).tolist() != [2] * 5  # a shared budget, not k per row


def test_streaming_metrics_equal_one_pass_metrics():
    generator = torch.Generator().manual_seed(2)
    x, x_hat = torch.randn(50, 3, generator=generator) + 2, torch.randn(50, 3, generator=generator)
    codes = torch.relu(torch.randn(50, 6, generator=generator))
    whole, parts = DictionaryMetrics(0.3), DictionaryMetrics(0.3)
    whole.update(x, x_hat, codes)
    for start in range(0, 50, 7):
        parts.update(x[start : start + 7], x_hat[start : start + 7], codes[start : start + 7])
    assert whole.result() == pytest.approx(parts.result(), rel=1e-12)
    xs, rebuilt = x.double().numpy(), x_hat.double().numpy()
    fvu = ((xs - rebuilt) ** 2).sum() / ((xs - xs.mean(0)) ** 2).sum()
    assert whole.result()["fvu"] == pytest.approx(fvu, rel=1e-12)


# --------------------------------------------------------------------------- a new variant

TOY_VARIANT = '''
"""A toy SAE variant: BatchTopK codes over a randomly initialised linear encoder."""

from monoscope.sae import SparseAutoencoder, register_sae
from monoscope.sae.parts import BatchTopKSparsifier, FreeDictionary, LinearEncoder


@register_sae("toy_batch_topk")
class ToyBatchTopKSAE(SparseAutoencoder):
    hyperparameters = ("num_features", "k", "init")

    def __init__(self, input_dim, num_features, k=4, init="random"):
        super().__init__(
            input_dim,
            LinearEncoder(input_dim, num_features),
            BatchTopKSparsifier(input_dim, num_features, k),
            FreeDictionary(input_dim, num_features),
            init=init,
        )

    k = property(lambda self: self.sparsifier.k)
'''


def test_a_new_variant_is_one_registered_class_in_one_file(tmp_path, monkeypatch, sparse_store):
    import importlib.util

    # The registration is undone after the test: a copy of the entries is restored.
    monkeypatch.setattr(SAE_VARIANTS, "_entries", dict(SAE_VARIANTS._entries))
    source = tmp_path / "toy_sae_variant.py"
    source.write_text(TOY_VARIANT)
    spec = importlib.util.spec_from_file_location("toy_sae_variant", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert SAE_VARIANTS["toy_batch_topk"] is module.ToyBatchTopKSAE

    config = SAEConfig(
        variant="toy_batch_topk", expansion=2, k=3, init="random", batch_size=128, epochs=2
    )
    sae, history = train_sae(sparse_store, config)
    assert type(sae) is module.ToyBatchTopKSAE and sae.k == 3 and sae.num_features == 16
    assert len(history["epochs"]) == 2 and set(history["epochs"][0]) >= {"loss", "mse"}
    np.testing.assert_allclose(sae.decoder.detach().norm(dim=0).numpy(), 1.0, atol=1e-5)
    metrics = evaluate_sae(sae, sparse_store, batch_size=128)
    assert metrics["l0"] <= 3 and 0 < metrics["fvu"] < 1

    path = tmp_path / "toy.safetensors"
    save_sae(sae, path)
    loaded = load_sae(path)
    assert type(loaded) is module.ToyBatchTopKSAE and loaded.config == sae.config
    assert_same_state(sae, loaded)
    assert evaluate_sae(loaded, sparse_store, batch_size=128) == metrics


def test_version_1_sae_files_are_still_read(tmp_path):
    """Files written before the dictionary base: state at the top level, old names."""
    from monoscope.io import save_tensors

    sae = randomised(TopKSAE(5, 8, k=2, normalized_mse=True), seed=16)
    old_names = {"encoding.weight": "encoder", "encoding.bias": "encoder_bias"}
    old_names["dictionary.weight"] = "decoder"
    state = {old_names.get(key, key): value for key, value in sae.state_dict().items()}
    metadata = {"format": "monoscope-sae", "version": 1, "variant": "topk", "input_dim": 5}
    save_tensors(tmp_path / "old.safetensors", state, {**metadata, "config": sae.config})
    loaded, extra = read_sae(tmp_path / "old.safetensors")
    assert type(loaded) is TopKSAE and loaded.config == sae.config and extra == {}
    assert_same_state(sae, loaded)


def test_sae_config_takes_vector_variants_only():
    import monoscope.equivariant.saes  # noqa: F401  (registers the orbit variant)
    from monoscope.sae.base import SAE_VARIANTS, vector_variants

    assert "orbit" in SAE_VARIANTS and "orbit" not in vector_variants()
    assert {"l1", "topk"} <= set(vector_variants())
    with pytest.raises(ValueError, match="variant"):
        SAEConfig(variant="orbit")
