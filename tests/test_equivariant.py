"""Tests of monoscope.equivariant: shapes and their rotations, tasks, the latent action M,
orbit SAEs and their losses, probes, real-image loading, training reproducibility and
files. Tiny sizes throughout; every formula is checked against an independent
computation."""

from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np
import pytest
import torch

import monoscope  # noqa: F401  (must precede any torchvision import)
from monoscope.equivariant import autoencoders as ae
from monoscope.equivariant import data as real
from monoscope.equivariant import orbits, probes, saes, shapes, symmetry, tasks
from monoscope.sae import load_sae, read_sae, save_sae
from monoscope.sae.parts import top_k_codes

N_ORBITS = 48
SIZE = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset() -> shapes.ShapesDataset:
    config = shapes.ShapesConfig(
        num_orbits=N_ORBITS, image_size=SIZE, min_size=0.15, canonical_orientation=None, seed=3
    )
    return shapes.generate_shapes(config, progress=False)


def canonical_attributes(dataset: shapes.ShapesDataset) -> dict[str, np.ndarray]:
    return {key: value[dataset.members == 0] for key, value in dataset.attributes.items()}


def orthogonal_order_four(dim: int, seed: int) -> torch.Tensor:
    """A random orthogonal M with M^4 = I: 90-degree planes, and +-1 axes, in a random basis."""
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64, generator=generator))
    block = torch.zeros(dim, dim, dtype=torch.float64)
    planes = (dim - 2) // 2
    for p in range(planes):
        block[2 * p, 2 * p + 1], block[2 * p + 1, 2 * p] = -1.0, 1.0
    block[dim - 2, dim - 2], block[dim - 1, dim - 1] = 1.0, -1.0
    if dim % 2:
        block[dim - 3, dim - 3] = 1.0
    return basis @ block @ basis.T


def synthetic_orbits(matrix: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Orbits ``a_j = M^j a_0`` computed by repeated matrix-vector products."""
    generator = torch.Generator().manual_seed(seed)
    a0 = torch.randn(count, matrix.shape[0], dtype=torch.float64, generator=generator)
    members = [a0]
    for _ in range(3):
        members.append(members[-1] @ matrix.T)
    return torch.stack(members, dim=1)


# ---------------------------------------------------------------------- orbits and shapes


def test_four_quarter_turns_return_the_image(dataset):
    images = dataset.images
    turned = images
    for _ in range(4):
        turned = orbits.rotate_images(turned, 1)
    assert torch.equal(turned, images)
    assert not torch.equal(orbits.rotate_images(images, 1), images)
    assert torch.equal(orbits.rotate_images(images, -1), orbits.rotate_images(images, 3))
    # C2: the generator is a half turn
    assert torch.equal(orbits.rotate_images(images, 1, 2), torch.rot90(images, 2, dims=(-2, -1)))


def test_dataset_layout_is_orbit_major(dataset):
    n = dataset.orbit_size
    assert dataset.num_images == N_ORBITS * n
    assert np.array_equal(dataset.orbit_ids, np.repeat(np.arange(N_ORBITS), n))
    assert np.array_equal(dataset.members, np.tile(np.arange(n), N_ORBITS))
    view = dataset.images.view(N_ORBITS, n, 3, SIZE, SIZE)
    for j in range(n):
        assert torch.equal(view[:, j], torch.rot90(view[:, 0], j, dims=(-2, -1)))
    assert dataset.images.dtype == torch.uint8
    floats = dataset.float_images()
    assert floats.dtype == torch.float32 and 0.0 <= floats.min() and floats.max() <= 1.0
    assert torch.equal(dataset.canonical_images(), floats[dataset.members == 0])
    assert torch.equal(dataset.orbit_images()[:, 2], floats[dataset.members == 2])


def test_rotated_attributes_render_the_rotated_image(dataset):
    canonical = canonical_attributes(dataset)
    images = dataset.images[dataset.members == 0]
    assert torch.equal(shapes.render_shapes(canonical, dataset.config), images)
    for turns in range(5):
        rotated = shapes.rotate_attributes(canonical, turns, SIZE)
        drawn = shapes.render_shapes(rotated, dataset.config)
        assert torch.equal(drawn, torch.rot90(images, turns, dims=(-2, -1))), turns
    # the stored attributes of every member draw that member
    assert torch.equal(shapes.render_shapes(dataset.attributes, dataset.config), dataset.images)


def test_rotation_of_attributes_matches_pixel_geometry():
    """Independent of rendering: where torch.rot90 moves a single pixel."""
    size = 12
    rng = np.random.default_rng(0)
    for _ in range(20):
        row, col = rng.integers(0, size, 2)
        image = torch.zeros(size, size)
        image[row, col] = 1.0
        record = {
            "x": np.array([col + 0.5]),
            "y": np.array([row + 0.5]),
            "orientation": np.array([3]),
        }
        for turns in range(4):
            moved = torch.nonzero(torch.rot90(image, turns, dims=(-2, -1)))[0]
            rotated = shapes.rotate_attributes(record, turns, size)
            assert rotated["x"][0] == moved[1] + 0.5 and rotated["y"][0] == moved[0] + 0.5
            assert rotated["orientation"][0] == (3 + turns) % 4


def test_every_shape_shows_its_orientation_and_stays_in_the_image():
    config = shapes.ShapesConfig(num_orbits=1, image_size=32)
    for kind in range(len(config.shapes)):
        record = {
            "shape": np.full(4, kind),
            "color": np.zeros(4, dtype=np.int64),
            "background": np.zeros(4, dtype=np.int64),
            "orientation": np.arange(4),
            "size": np.full(4, 7.3),
            "x": np.full(4, 16.0),
            "y": np.full(4, 16.0),
        }
        drawn = shapes.render_shapes(record, config)
        distinct = {drawn[o].numpy().tobytes() for o in range(4)}
        assert len(distinct) == 4, config.shapes[kind]
        foreground = (drawn[0] != drawn[0, :, 0:1, 0:1]).any(dim=0)
        rows, cols = torch.nonzero(foreground, as_tuple=True)
        centres_x, centres_y = cols + 0.5, rows + 0.5
        assert (centres_x - 16).abs().max() <= 7.3 and (centres_y - 16).abs().max() <= 7.3
        assert foreground.sum() > 10


def test_sampled_positions_are_closed_under_rotation():
    config = shapes.ShapesConfig(num_orbits=500, image_size=24, seed=1)
    record = shapes.sample_attributes(config, 500, seed=1)
    low, high = config.position_range
    grid = low + 0.5 * np.arange(round(2 * (high - low)) + 1)
    for turns in range(4):
        rotated = shapes.rotate_attributes(record, turns, config.image_size)
        assert np.isin(rotated["x"], grid).all() and np.isin(rotated["y"], grid).all()
    assert (record["size"] <= low).all()  # a shape of half-extent r fits at any position


def test_canonical_shapes_are_upright_by_default(dataset):
    upright = shapes.generate_shapes(
        dataclasses.replace(dataset.config, canonical_orientation=0), progress=False
    )
    assert np.array_equal(upright.attributes["orientation"], upright.members)
    # the option changes the orientation only
    for key in ("shape", "color", "x", "y", "size"):
        assert np.array_equal(
            upright.attributes[key][upright.members == 0],
            dataset.attributes[key][dataset.members == 0],
        )
    assert len(set(dataset.attributes["orientation"][dataset.members == 0])) == 4
    assert shapes.ShapesConfig().canonical_orientation == 0
    with pytest.raises(ValueError, match="canonical_orientation"):
        shapes.ShapesConfig(canonical_orientation=4)


def test_generation_is_seeded(dataset):
    again = shapes.generate_shapes(dataset.config, progress=False)
    assert torch.equal(again.images, dataset.images)
    other = shapes.generate_shapes(dataclasses.replace(dataset.config, seed=4), progress=False)
    assert not torch.equal(other.images, dataset.images)


def test_shapes_save_load_round_trip(dataset, tmp_path):
    path = tmp_path / "shapes.safetensors"
    shapes.save_shapes(path, dataset)
    loaded = shapes.load_shapes(path)
    assert torch.equal(loaded.images, dataset.images)
    assert loaded.config == dataset.config
    assert set(loaded.attributes) == set(dataset.attributes)
    for key, value in dataset.attributes.items():
        assert (
            np.array_equal(loaded.attributes[key], value)
            and loaded.attributes[key].dtype == value.dtype
        )
    assert np.array_equal(loaded.orbit_ids, dataset.orbit_ids)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        shapes.load_shapes(tmp_path / "missing.safetensors")


def test_shapes_config_validation():
    with pytest.raises(ValueError, match="orbit_size"):
        shapes.ShapesConfig(orbit_size=3)
    with pytest.raises(ValueError, match="shapes.shapes"):
        shapes.ShapesConfig(shapes=("circle",))
    with pytest.raises(ValueError, match="share a colour"):
        shapes.ShapesConfig(colors=("red", "black"), backgrounds=("black",))
    with pytest.raises(ValueError, match="max_size"):
        shapes.ShapesConfig(max_size=0.6)


# ---------------------------------------------------------------------- tasks


def test_task_labels_match_the_attributes(dataset):
    task_list = tasks.shape_tasks(dataset.config)
    labels, names = tasks.task_labels(dataset.attributes, task_list)
    assert labels.shape == (dataset.num_images, len(task_list)) and labels.dtype == np.uint8
    assert len(set(names)) == len(names)
    a = dataset.attributes
    red = dataset.config.colors.index("red")
    tee = dataset.config.shapes.index("tee")
    assert np.array_equal(labels[:, names.index("color=red")], (a["color"] == red).astype(np.uint8))
    both = names.index("shape=tee&color=red")
    assert np.array_equal(
        labels[:, both], ((a["shape"] == tee) & (a["color"] == red)).astype(np.uint8)
    )
    low, high = dataset.config.position_range
    threshold = low + 0.5 * (high - low)
    x_task = [n for n in names if n.startswith("x>")][1]
    assert np.array_equal(labels[:, names.index(x_task)], (a["x"] > threshold).astype(np.uint8))
    # invariant tasks are constant over every orbit; a positional one is not
    per_orbit = labels.reshape(N_ORBITS, dataset.orbit_size, -1)
    constant = (per_orbit == per_orbit[:, :1]).all(axis=(0, 1))
    flags = np.array([task.invariant for task in task_list])
    assert constant[flags].all()
    assert not constant[names.index(x_task)]
    only = tasks.shape_tasks(dataset.config, tasks.TaskConfig(invariant_only=True))
    assert all(task.invariant for task in only) and len(only) == flags.sum()
    assert tasks.ProbeTask.from_dict(task_list[5].to_dict()) == task_list[5]


def test_task_config_validation():
    with pytest.raises(ValueError, match="thresholds"):
        tasks.TaskConfig(thresholds=(1.5,))
    with pytest.raises(ValueError, match="conjunctions"):
        tasks.TaskConfig(conjunctions=(("shape", "size"),))


# ---------------------------------------------------------------------- symmetry


def test_known_symmetry_is_recovered():
    matrix = orthogonal_order_four(12, seed=0)
    assert torch.allclose(torch.linalg.matrix_power(matrix, 4), torch.eye(12, dtype=torch.float64))
    latents = synthetic_orbits(matrix, 200, seed=1)
    fit = symmetry.fit_symmetry(latents, ridge=0.0)
    assert torch.allclose(fit.matrix.double(), matrix, atol=1e-5)
    assert fit.relative_error < 1e-10 and fit.r2 > 1 - 1e-10
    assert max(fit.power_errors) < 1e-10 and fit.identity_error > 0.5
    # the default relative ridge shrinks M by 1 / (1 + ridge) on isotropic data
    ridged = symmetry.fit_symmetry(latents)
    assert torch.allclose(ridged.matrix.double(), matrix, atol=3e-3)
    # C2: a reflection (M^2 = I) from orbits of size 2
    reflection = torch.eye(5, dtype=torch.float64)
    reflection[0, 0] = -1.0
    base = torch.randn(50, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    fit = symmetry.fit_symmetry(torch.stack([base, base @ reflection.T], dim=1), ridge=0.0)
    assert torch.allclose(fit.matrix.double(), reflection, atol=1e-6)


def test_refinement_keeps_an_exact_fit():
    matrix = orthogonal_order_four(6, seed=3)
    latents = synthetic_orbits(matrix, 100, seed=4)
    start = symmetry.fit_symmetry(latents, ridge=0.0)
    fit = symmetry.fit_symmetry(latents, ridge=0.0, refine_steps=5)
    assert torch.allclose(fit.matrix.double(), matrix, atol=1e-6)
    assert max(fit.power_errors) <= max(start.power_errors) + 1e-12
    # on noisy orbits, refinement lowers the loss over all powers
    noisy = latents + 0.3 * torch.randn(
        latents.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    plain = symmetry.fit_symmetry(noisy, ridge=0.0)
    refined = symmetry.fit_symmetry(noisy, ridge=0.0, refine_steps=30)
    assert sum(refined.power_errors) < sum(plain.power_errors)


def test_symmetry_helpers_against_explicit_products():
    generator = torch.Generator().manual_seed(5)
    matrix = torch.randn(4, 4, dtype=torch.float64, generator=generator)
    vectors = torch.randn(3, 4, dtype=torch.float64, generator=generator)
    powers = symmetry.symmetry_powers(matrix, 4)
    assert torch.allclose(powers[0], torch.eye(4, dtype=torch.float64))
    assert torch.allclose(powers[3], matrix @ matrix @ matrix)
    assert torch.allclose(symmetry.symmetry_power(matrix, -1, 4), matrix @ matrix @ matrix)
    moved = symmetry.from_canonical(vectors, matrix, 4)
    for j in range(4):
        for b in range(3):
            assert torch.allclose(moved[b, j], torch.linalg.matrix_power(matrix, j) @ vectors[b])
    assert torch.allclose(symmetry.act(vectors, matrix, 2, 4)[1], matrix @ matrix @ vectors[1])
    back = symmetry.to_canonical(moved, matrix)
    for j in range(4):
        expected = torch.linalg.matrix_power(matrix, (4 - j) % 4) @ moved[0, j]
        assert torch.allclose(back[0, j], expected)
    exact = orthogonal_order_four(4, seed=6)
    assert torch.allclose(
        symmetry.to_canonical(symmetry.from_canonical(vectors, exact, 4), exact),
        vectors[:, None, :].expand(3, 4, 4),
    )


# ---------------------------------------------------------------------- SAEs


def tiny_sae(family="equivariant", loss_type="latent_inv", **overrides) -> saes.OrbitSAE:
    torch.manual_seed(0)
    arguments = dict(
        input_dim=3,
        num_features=5,
        k=2,
        orbit_size=4,
        family=family,
        loss_type=loss_type,
        encoder_type="nonlinear",
        hidden_dim=4,
        n_centroids=3 if family == "archetypal" else 0,
        unit_decoder=family != "archetypal",
    )
    arguments.update(overrides)
    sae = saes.OrbitSAE(**arguments)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.copy_(torch.randn_like(parameter))
        if family == "equivariant":
            sae.symmetry.copy_(torch.randn(3, 3) / 2)
        if family == "archetypal":
            sae.dictionary.centroids.copy_(torch.randn(3, 3))
    return sae


def test_topk_keeps_exactly_k_then_relu():
    pre = torch.tensor([[3.0, -1.0, 2.0, 0.5, -4.0], [-3.0, -1.0, -2.0, -0.5, -4.0]])
    codes = top_k_codes(pre, 2)
    assert torch.equal(codes[0], torch.tensor([3.0, 0.0, 2.0, 0.0, 0.0]))
    assert torch.equal(codes[1], torch.zeros(5))  # the top two are negative: ReLU zeroes them
    generator = torch.Generator().manual_seed(0)
    random_pre = torch.randn(50, 20, generator=generator) + 1.0
    codes = top_k_codes(random_pre, 6)
    for row, code in zip(random_pre, codes, strict=True):
        kept = torch.argsort(row, descending=True)[:6]
        expected = torch.zeros(20)
        expected[kept] = row[kept].clamp_min(0)
        assert torch.equal(code, expected)
    assert ((codes != 0).sum(dim=1) <= 6).all() and (codes >= 0).all()


def test_encoder_uses_the_pre_encoder_bias():
    sae = tiny_sae("vanilla", "mse")
    x = torch.randn(7, 3)
    hidden = torch.relu(
        (x - sae.decoder_bias) @ sae.encoding.hidden_weight.T + sae.encoding.hidden_bias
    )
    expected = top_k_codes(hidden @ sae.encoder.T + sae.encoder_bias, 2)
    assert torch.allclose(sae.encode(x), expected)
    assert torch.allclose(sae.decode(expected), expected @ sae.decoder.T + sae.decoder_bias)
    with torch.no_grad():
        sae.decoder_bias.add_(5.0)
    assert not torch.allclose(sae.encode(x), expected)
    plain = tiny_sae("vanilla", "mse", pre_encoder_bias=False)
    before = plain.encode(x)
    with torch.no_grad():
        plain.decoder_bias.add_(5.0)
    assert torch.equal(plain.encode(x), before)
    linear = tiny_sae("vanilla", "mse", encoder_type="linear")
    manual = top_k_codes((x - linear.decoder_bias) @ linear.encoder.T + linear.encoder_bias, 2)
    assert torch.allclose(linear.encode(x), manual)


def _power(matrix: torch.Tensor, j: int) -> torch.Tensor:
    return torch.linalg.matrix_power(matrix.double(), j % 4)


def hand_loss(sae: saes.OrbitSAE, orbit: torch.Tensor) -> float:
    """The documented losses with explicit loops and column-vector products."""
    m = sae.symmetry.double() if sae.family == "equivariant" else None
    W_d = sae.dictionary().detach().double()
    b_d = sae.decoder_bias.detach().double()

    def encode(v):
        return sae.encode(v.float()[None])[0].detach().double()

    def decode(z):
        return W_d @ z + b_d

    batch, n, _ = orbit.shape
    total = 0.0
    for b in range(batch):
        a = [orbit[b, j].double() for j in range(n)]
        if sae.loss_type == "mse":
            total += sum(float(((a[j] - decode(encode(a[j]))) ** 2).sum()) for j in range(n)) / n
        elif sae.loss_type in ("latent_inv", "canonical"):
            pair_sum = 0.0
            for j in range(n):
                source = a[j] if sae.loss_type == "latent_inv" else _power(m, -j) @ a[j]
                decoded = decode(encode(source))
                for i in range(n):
                    pair_sum += float(((a[i] - _power(m, i) @ decoded) ** 2).sum())
            total += pair_sum / n**2
        else:  # output_inv
            pair_sum = 0.0
            for j in range(n):
                output = _power(m, -j) @ decode(encode(a[j]))
                for i in range(n):
                    pair_sum += float(((_power(m, -i) @ a[i] - output) ** 2).sum())
            total += pair_sum / n**2
    return total / batch


@pytest.mark.parametrize(
    ("family", "loss_type"),
    [
        ("vanilla", "mse"),
        ("equivariant", "latent_inv"),
        ("equivariant", "canonical"),
        ("equivariant", "output_inv"),
        ("archetypal", "mse"),
    ],
)
def test_losses_equal_hand_computation(family, loss_type):
    sae = tiny_sae(family, loss_type)
    orbit = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(1))
    terms, codes = sae.loss_and_codes(orbit)
    assert terms["loss"].item() == pytest.approx(hand_loss(sae, orbit), rel=1e-5)
    assert codes.shape == (2, 4, 5) and ((codes != 0).sum(-1) <= 2).all()
    # the member-wise reconstruction behind "mse" and reconstruct_orbit
    rebuilt = sae.reconstruct_orbit(orbit)
    for j in range(4):
        source = orbit[:, j]
        if loss_type == "canonical":
            source = source @ _power(sae.symmetry, -j).float().T
        decoded = sae.decode(sae.encode(source))
        if loss_type in ("latent_inv", "canonical"):
            decoded = decoded @ _power(sae.symmetry, j).float().T
        assert torch.allclose(rebuilt[:, j], decoded, atol=1e-5)
    expected_mse = (orbit - rebuilt).pow(2).sum(-1).mean()
    assert terms["mse"].item() == pytest.approx(expected_mse.item(), rel=1e-5)


def test_output_inv_equals_its_mean_form():
    sae = tiny_sae("equivariant", "output_inv")
    orbit = torch.randn(3, 4, 3, generator=torch.Generator().manual_seed(2))
    targets = symmetry.to_canonical(orbit.double(), sae.symmetry.double())
    outputs = symmetry.to_canonical(
        sae.decode(sae.encode_orbit(orbit)).double(), sae.symmetry.double()
    )
    mean_form = (targets.mean(1, keepdim=True) - outputs).pow(2).sum(-1).mean()
    spread = (targets - targets.mean(1, keepdim=True)).pow(2).sum(-1).mean()
    loss = sae.loss_and_codes(orbit)[0]["loss"]
    assert loss.item() == pytest.approx((mean_form + spread).item(), rel=1e-5)


def test_equivariant_loss_is_zero_for_an_exact_invariant_model():
    """With an exact M and a decoder that reproduces a canonical latent, latent_inv and
    canonical losses vanish only for invariant codes; check the canonical one does."""
    matrix = orthogonal_order_four(4, seed=7).float()
    sae = saes.OrbitSAE(
        4,
        4,
        4,
        family="equivariant",
        loss_type="canonical",
        encoder_type="linear",
        pre_encoder_bias=False,
    )
    with torch.no_grad():
        sae.symmetry.copy_(matrix)
        sae.encoder.copy_(torch.eye(4))
        sae.decoder.copy_(torch.eye(4))
        sae.encoder_bias.zero_()
        sae.decoder_bias.zero_()
    canonical = torch.rand(5, 4) + 0.1  # positive, so the ReLU keeps it
    orbit = symmetry.from_canonical(canonical, matrix, 4)
    assert sae.loss_and_codes(orbit)[0]["loss"].item() < 1e-10
    codes = sae.encode_orbit(orbit)
    assert torch.allclose(codes, codes[:, :1].expand_as(codes), atol=1e-5)


def test_archetypal_atoms_are_convex_combinations():
    sae = tiny_sae("archetypal", "mse")
    weights = sae.dictionary.weights()
    assert (weights >= 0).all() and torch.allclose(weights.sum(dim=1), torch.ones(5))
    assert torch.allclose(sae.dictionary(), (weights @ sae.dictionary.centroids).T)
    relaxed = tiny_sae("archetypal", "mse", relaxation=0.1)
    relaxed.apply_constraints_()
    atoms = relaxed.dictionary
    assert (atoms.offsets.norm(dim=0) <= 0.1 + 1e-6).all()
    assert torch.allclose(
        relaxed.dictionary(), (atoms.weights() @ atoms.centroids).T + atoms.offsets
    )


@pytest.fixture(scope="module")
def exact_latents() -> tuple[torch.Tensor, torch.Tensor]:
    matrix = orthogonal_order_four(8, seed=8)
    latents = synthetic_orbits(matrix, 64, seed=9) + 0.5
    # the offset breaks M-equivariance on purpose: the data are only approximately symmetric
    return latents.float(), symmetry.fit_symmetry(latents).matrix


# A small vanilla orbit SAE; keywords override its settings.
sae_config = partial(
    saes.OrbitSAEConfig,
    family="vanilla",
    k=3,
    expansion=2.0,
    hidden_dim=8,
    epochs=2,
    batch_size=16,
    lr=1e-2,
    n_centroids=10,
    seed=1,
)


def test_training_keeps_unit_decoder_columns_and_archetypal_weights(exact_latents):
    latents, matrix = exact_latents
    for family, loss_type in (("vanilla", None), ("equivariant", "output_inv")):
        config = sae_config(family=family, loss_type=loss_type, epochs=1)
        sae, history = saes.train_orbit_sae(latents, config, symmetry=matrix, progress=False)
        norms = sae.decoder.norm(dim=0)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
        assert history[0]["steps"] == 4 and history[0]["l0"] <= 3
    config = sae_config(family="archetypal", relaxation=0.05)
    sae, _ = saes.train_orbit_sae(latents, config, progress=False)
    weights = sae.dictionary.weights()
    assert (weights >= 0).all() and torch.allclose(weights.sum(dim=1), torch.ones(weights.shape[0]))
    assert (sae.dictionary.offsets.norm(dim=0) <= 0.05 + 1e-6).all()
    # the centroids are k-means centroids of the centred training vectors
    from sklearn.cluster import KMeans

    flat = latents.reshape(-1, 8)
    centred = (flat - flat.double().mean(0).float()).double().numpy()
    expected = KMeans(n_clusters=10, n_init=1, random_state=1).fit(centred).cluster_centers_
    assert np.allclose(sae.dictionary.centroids.numpy(), expected, atol=1e-4)


def test_sae_training_is_reproducible_and_resumable(exact_latents, tmp_path):
    latents, matrix = exact_latents
    for family, loss_type in (("equivariant", "canonical"), ("archetypal", None)):
        config = sae_config(family=family, loss_type=loss_type, epochs=3)
        first, history = saes.train_orbit_sae(latents, config, symmetry=matrix, progress=False)
        second, _ = saes.train_orbit_sae(latents, config, symmetry=matrix, progress=False)
        for (name, a), (_, b) in zip(
            first.state_dict().items(), second.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), name
        checkpoint = tmp_path / f"{family}.safetensors"
        saes.train_orbit_sae(
            latents,
            dataclasses.replace(config, epochs=1),
            symmetry=matrix,
            checkpoint=checkpoint,
            progress=False,
        )
        resumed, resumed_history = saes.train_orbit_sae(
            latents, config, symmetry=matrix, checkpoint=checkpoint, progress=False
        )
        for (name, a), (_, b) in zip(
            first.state_dict().items(), resumed.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), name
        assert [r["loss"] for r in resumed_history] == [r["loss"] for r in history]
        # A finished run's checkpoint resumes at its last epoch: the same SAE, no training
        # (train_equivariant_saes keeps them until the job ends, for a killed job's rerun).
        again, again_history = saes.train_orbit_sae(
            latents, config, symmetry=matrix, checkpoint=checkpoint, progress=False
        )
        for (name, a), (_, b) in zip(
            first.state_dict().items(), again.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), name
        assert again_history == resumed_history
        with pytest.raises(ValueError, match="different config"):
            saes.train_orbit_sae(
                latents,
                dataclasses.replace(config, lr=1e-3),
                symmetry=matrix,
                checkpoint=checkpoint,
                progress=False,
            )
    with pytest.raises(ValueError, match="another M"):
        config = sae_config(family="equivariant", loss_type="canonical", epochs=3)
        saes.train_orbit_sae(
            latents,
            config,
            symmetry=matrix * 2,
            checkpoint=tmp_path / "equivariant.safetensors",
            progress=False,
        )


def test_sae_save_load_round_trip_and_metrics(exact_latents, tmp_path):
    latents, matrix = exact_latents
    for family, loss_type in (
        ("vanilla", None),
        ("equivariant", "latent_inv"),
        ("archetypal", None),
    ):
        config = sae_config(family=family, loss_type=loss_type, epochs=1, encoder_type="linear")
        sae, history = saes.train_orbit_sae(latents, config, symmetry=matrix, progress=False)
        path = tmp_path / f"{family}.safetensors"
        save_sae(sae, path, {"config": config.to_dict(), "history": history})
        loaded, metadata = read_sae(path)
        assert type(loaded) is saes.OrbitSAE and loaded.config == sae.config
        assert saes.OrbitSAEConfig.from_dict(metadata["config"]) == config
        assert metadata["history"] == history
        assert torch.equal(loaded.encode_orbit(latents), sae.encode_orbit(latents))
        assert torch.equal(loaded.reconstruct_orbit(latents), sae.reconstruct_orbit(latents))
        metrics = saes.evaluate_orbit_sae(sae, latents, batch_size=10)
        rebuilt = sae.reconstruct_orbit(latents).detach().reshape(-1, 8).double().numpy()
        flat = latents.reshape(-1, 8).double().numpy()
        from sklearn.metrics import r2_score

        assert metrics["fvu"] == pytest.approx(
            1 - r2_score(flat, rebuilt, multioutput="variance_weighted"), rel=1e-6
        )
        codes = saes.encode_orbits(sae, latents, batch_size=7)
        assert torch.equal(codes, sae.encode_orbit(latents).detach())
        active = (codes.reshape(-1, codes.shape[-1]) != 0).numpy()
        assert metrics["l0"] == pytest.approx(active.sum(1).mean())
        assert metrics["dead_fraction"] == pytest.approx((~active.any(0)).mean())
        assert 0 <= metrics["orbit_code_variance"] <= 1
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        load_sae(tmp_path / "nothing.safetensors")


@pytest.mark.parametrize(
    ("family", "loss_type", "options"),
    [
        ("vanilla", "mse", {}),
        ("vanilla", "mse", {"encoder_type": "linear", "pre_encoder_bias": False}),
        ("vanilla", "mse", {"unit_decoder": False}),
        ("equivariant", "latent_inv", {}),
        ("equivariant", "canonical", {"encoder_type": "linear"}),
        ("equivariant", "output_inv", {}),
        ("archetypal", "mse", {}),
        ("archetypal", "mse", {"relaxation": 0.1, "encoder_type": "linear"}),
    ],
)
def test_every_orbit_sae_round_trips_through_the_sae_file(tmp_path, family, loss_type, options):
    sae = tiny_sae(family, loss_type, **options)
    path = tmp_path / "sae.safetensors"
    save_sae(sae, path)
    loaded = load_sae(path)
    assert type(loaded) is saes.OrbitSAE and loaded.config == sae.config
    assert loaded.state_dict().keys() == sae.state_dict().keys()
    for key, value in sae.state_dict().items():  # M and the centroids included
        assert torch.equal(loaded.state_dict()[key], value), key
    orbit = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(loaded.reconstruct_orbit(orbit), sae.reconstruct_orbit(orbit))


def test_orbit_sae_files_of_save_orbit_sae_are_still_read(tmp_path):
    """The file layout before the dictionary base: kind ``equivariant_orbit_sae``."""
    from monoscope.checkpoints import save_model_file

    sae = tiny_sae("archetypal", "mse", relaxation=0.1)
    old_names = {
        "encoding.hidden_weight": "encoder_hidden",
        "encoding.hidden_bias": "encoder_hidden_bias",
        "encoding.weight": "encoder",
        "encoding.bias": "encoder_bias",
        "dictionary.logits": "archetype_logits",
        "dictionary.centroids": "centroids",
        "dictionary.offsets": "relaxation_offsets",
    }
    old = torch.nn.Module()
    for key, value in sae.state_dict().items():
        if key != "samples_since_fired":  # the old SAEs had no firing counts
            old.register_buffer(old_names.get(key, key), value)
    config = saes.OrbitSAEConfig(family="archetypal", relaxation=0.1)
    metadata = {"sae": {"input_dim": 3, **sae.config}, "config": config.to_dict(), "history": []}
    save_model_file(tmp_path / "old.safetensors", "equivariant_orbit_sae", old, metadata)
    loaded, extra = read_sae(tmp_path / "old.safetensors")
    assert type(loaded) is saes.OrbitSAE and loaded.config == sae.config
    assert extra == {"config": config.to_dict(), "history": []}
    for key, value in sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_load_sae_registers_the_orbit_variant_by_itself(tmp_path):
    """A process that never imported monoscope.equivariant reads an orbit SAE file."""
    import subprocess
    import sys

    path = tmp_path / "sae.safetensors"
    save_sae(tiny_sae("archetypal", "mse"), path)
    script = (
        "import sys; from monoscope.sae import load_sae; "
        "assert 'monoscope.equivariant.saes' not in sys.modules; "
        f"print(type(load_sae({str(path)!r})).__name__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "OrbitSAE"


def test_sae_config_validation():
    with pytest.raises(ValueError, match="loss_type"):
        saes.OrbitSAEConfig(family="equivariant")
    with pytest.raises(ValueError, match="family: equivariant"):
        saes.OrbitSAEConfig(family="vanilla", loss_type="latent_inv")
    with pytest.raises(ValueError, match="unit_decoder"):
        saes.OrbitSAEConfig(family="archetypal", unit_decoder=True)
    with pytest.raises(ValueError, match="sae.k"):
        saes.OrbitSAEConfig(k=0)
    assert saes.OrbitSAEConfig(family="archetypal").unit_decoder is False
    assert saes.OrbitSAEConfig().loss_type == "mse"
    config = saes.OrbitSAEConfig(family="equivariant", loss_type="output_inv")
    assert saes.OrbitSAEConfig.from_dict(config.to_dict()) == config
    assert config.features_for(256) == 1024 and config.name == "equivariant_output_inv"
    with pytest.raises(ValueError, match="needs the latent action"):
        saes.train_orbit_sae(torch.zeros(4, 4, 3), config, progress=False)


# ---------------------------------------------------------------------- probes


def test_f1_equals_sklearn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for _ in range(30):
        truth = rng.integers(0, 2, 40)
        predicted = rng.integers(0, 2, 40)
        assert probes.f1_binary(truth, predicted) == pytest.approx(f1_score(truth, predicted))
    zeros = np.zeros(10, dtype=int)
    assert probes.f1_binary(zeros, zeros) == f1_score(zeros, zeros, zero_division=0) == 0.0
    assert probes.f1_binary(np.ones(4), np.ones(4)) == 1.0


def test_latent_selection_scores():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    features = rng.normal(size=(200, 6))
    features[:, 4] += 3 * labels  # the informative latent
    features[:, 2] = 1.0  # constant: scores 0
    scores = probes.latent_scores(features, labels)
    expected = [abs(np.corrcoef(features[:, c], labels)[0, 1]) if c != 2 else 0.0 for c in range(6)]
    assert np.allclose(scores, expected)
    assert probes.select_latents(features, labels, 1).tolist() == [4]
    difference = probes.latent_scores(features, labels, "mean_difference")
    manual = np.abs(features[labels == 1].mean(0) - features[labels == 0].mean(0))
    assert np.allclose(difference, manual)


def test_run_probes_on_a_fixed_split():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, (160, 3)).astype(np.uint8)
    labels[:, 2] = 0  # one class in training: skipped
    features = rng.normal(size=(160, 10)).astype(np.float32)
    features[:, 7] += 2.5 * labels[:, 0]
    features[:, 3] += 2.5 * labels[:, 1]
    test = orbits.member_mask(orbits.split_orbits(40, 0.25, seed=0), 4)
    assert test.sum() == 40
    config = probes.TruncatedProbeConfig(
        truncation_lengths=(1, 4, 50), xgboost=probes.XGBoostConfig(n_estimators=10)
    )
    results = probes.run_probes(
        features, labels, ["a", "b", "c"], test, config, family="toy", progress=False
    )
    assert list(results.columns) == list(probes.RESULT_COLUMNS)
    assert len(results) == 2 * 3 * 2 and set(results["task"]) == {"a", "b"}
    # the logistic probe with t = 1 on task a, rebuilt by hand
    x_train = features[~test][:, [7]]
    mean, std = x_train.mean(0), x_train.std(0)
    model = LogisticRegression(random_state=0, max_iter=1000).fit(
        (x_train - mean) / std, labels[~test, 0]
    )
    expected = f1_score(labels[test, 0], model.predict((features[test][:, [7]] - mean) / std))
    row = results.query("task == 'a' and probe == 'logistic' and t == 1")
    assert row["f1"].item() == pytest.approx(expected)
    assert (results.query("t == 1")["f1"] > 0.7).all()
    again = probes.run_probes(
        features, labels, ["a", "b", "c"], test, config, family="toy", progress=False
    )
    assert again.equals(results)
    summary = probes.aggregate_probes(results)
    assert len(summary) == 6 and (summary["tasks"] == 2).all()
    assert summary.query("probe == 'xgboost' and t == 4")["f1_mean"].item() == pytest.approx(
        results.query("probe == 'xgboost' and t == 4")["f1"].mean()
    )


def test_probe_config_validation():
    with pytest.raises(ValueError, match="truncation_lengths"):
        probes.TruncatedProbeConfig(truncation_lengths=(0,))
    with pytest.raises(ValueError, match="probes.probes"):
        probes.TruncatedProbeConfig(probes=("svm",))


# ---------------------------------------------------------------------- autoencoders


# A small base autoencoder of any architecture; keywords override its settings.
tiny_ae_config = partial(
    ae.AutoencoderConfig,
    latent_dim=16,
    hidden_dim=32,
    width=4,
    vit=ae.ViTConfig(patch_size=4, dim=16, depth=1, heads=2),
    epochs=2,
    batch_size=16,
    seed=2,
)


@pytest.mark.parametrize("architecture", ["mlp", "cnn", "vit"])
def test_autoencoder_shapes_and_files(architecture, dataset, tmp_path):
    images = dataset.canonical_images()
    config = tiny_ae_config(architecture, epochs=1)
    model, history = ae.train_autoencoder(images, config, progress=False)
    latent = model.encode(images[:5])
    assert latent.shape == (5, 16)
    rebuilt = model.decode(latent)
    assert rebuilt.shape == (5, 3, SIZE, SIZE) and 0 <= rebuilt.min() and rebuilt.max() <= 1
    path = tmp_path / f"{architecture}.safetensors"
    ae.save_autoencoder(path, model, config, history)
    loaded, loaded_config, loaded_history = ae.load_autoencoder(path)
    assert loaded_config == config and loaded_history == history
    assert torch.equal(ae.encode_images(loaded, images), ae.encode_images(model, images))
    latents = ae.orbit_latents(model, images, batch_size=7)
    assert latents.shape == (N_ORBITS, 4, 16)
    view = dataset.orbit_images()
    for j in range(4):
        assert torch.allclose(latents[:, j], ae.encode_images(model, view[:, j]), atol=1e-6)


def test_autoencoder_training_is_reproducible_and_resumable(dataset, tmp_path):
    images = dataset.canonical_images()
    config = tiny_ae_config("cnn", epochs=3)
    first, history = ae.train_autoencoder(images, config, progress=False)
    checkpoint = tmp_path / "ae.safetensors"
    ae.train_autoencoder(
        images, dataclasses.replace(config, epochs=2), checkpoint=checkpoint, progress=False
    )
    resumed, resumed_history = ae.train_autoencoder(
        images, config, checkpoint=checkpoint, progress=False
    )
    for (name, a), (_, b) in zip(
        first.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert [r["loss"] for r in resumed_history] == [r["loss"] for r in history]
    # a checkpoint loads as a model; the resumed run rewrote it after epoch 3
    loaded, _, loaded_history = ae.load_autoencoder(checkpoint)
    assert len(loaded_history) == 3
    assert torch.equal(loaded.encode(images[:2]), first.encode(images[:2]))


def test_random_rotations_are_quarter_turns(dataset):
    images = dataset.canonical_images()[:20]
    rotated = ae.random_rotations(images, torch.Generator().manual_seed(0))
    for original, turned in zip(images, rotated, strict=True):
        assert any(torch.equal(turned, torch.rot90(original, k, dims=(-2, -1))) for k in range(4))


def test_autoencoder_config_validation():
    with pytest.raises(ValueError, match="architecture"):
        ae.AutoencoderConfig(architecture="resnet")
    with pytest.raises(ValueError, match="vit.heads"):
        ae.ViTConfig(dim=10, heads=4)
    with pytest.raises(ValueError, match="autoencoder.vit.depth"):
        ae.ViTConfig(depth=0)
    with pytest.raises(ValueError, match="divisible by 8"):
        ae.build_autoencoder(ae.AutoencoderConfig(architecture="cnn"), 20)


# ---------------------------------------------------------------------- real images


def test_missing_image_folder_names_path_and_layout(tmp_path):
    missing = tmp_path / "galaxy_mnist"
    with pytest.raises(FileNotFoundError) as error:
        real.load_image_folder(missing, size=16)
    message = str(error.value)
    assert str(missing) in message and "smooth_round" in message and ".npz" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no class folders"):
        real.load_image_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="archive.npz"):
        real.load_image_npz(tmp_path / "archive.npz")


def test_image_folder_and_npz_round_trip(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    classes = ["spiral", "round"]
    for index, array in enumerate(pixels):
        folder = tmp_path / "folder" / classes[index % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder / f"{index}.png")
    loaded = real.load_image_folder(tmp_path / "folder", size=8, progress=False)
    assert loaded.class_names == ("round", "spiral") and len(loaded) == 6
    for row, source in enumerate(loaded.sources):
        index = int(source.rsplit("/", 1)[1].removesuffix(".png"))
        expected = torch.from_numpy(pixels[index].transpose(2, 0, 1)).float() / 255
        assert torch.allclose(loaded.images[row], expected)
        assert loaded.class_names[loaded.labels[row]] == classes[index % 2]
    resized = real.load_image_folder(tmp_path / "folder", size=4, progress=False)
    assert resized.images.shape == (6, 3, 4, 4)

    archive = tmp_path / "galaxy.npz"
    labels = np.array([0, 1, 2, 3, 1, 0])
    np.savez(archive, images=pixels.transpose(0, 3, 1, 2), labels=labels)  # [N, 3, H, W]
    from_npz = real.load_images(archive, size=8)
    assert from_npz.class_names == real.GALAXY_MNIST_CLASSES
    assert torch.allclose(
        from_npz.images, torch.from_numpy(pixels.transpose(0, 3, 1, 2)).float() / 255
    )
    matrix, names = real.class_tasks(from_npz.labels, from_npz.class_names)
    assert names[2] == "class=edge_on_disk" and matrix.sum(1).tolist() == [1] * 6
    assert np.array_equal(matrix.argmax(1), labels)
    per_member = orbits.repeat_members(matrix, 4)
    assert per_member.shape == (24, 4) and np.array_equal(
        per_member[4:8], np.repeat(matrix[1:2], 4, 0)
    )
    orbit_images = orbits.make_orbits(from_npz.images)
    assert orbit_images.shape == (6, 4, 3, 8, 8)
    assert torch.equal(orbit_images[:, 3], torch.rot90(from_npz.images, 3, dims=(-2, -1)))
