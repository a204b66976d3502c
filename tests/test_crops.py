"""Reference crops against hand-made cases and independent computations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import layer_output

from monoscope.crops import (
    CROP_KEYS,
    CropConfig,
    crop_images,
    cut_crops,
    direction_heatmaps,
    iter_crops,
    load_crops,
    position_heatmaps,
    render_crops,
    save_crops,
    square_boxes,
)
from monoscope.data import InMemoryDataset
from monoscope.references import (
    EMPTY_ID,
    ReferenceConfig,
    TopReferences,
    canonizers_for,
    collect_references,
)
from monoscope.units import Neurons, SAEFeatures

# --------------------------------------------------------------------------- boxes


def numpy_box(heatmap: np.ndarray, kernel: int, threshold: float) -> tuple[int, int, int]:
    """Blur, normalise, threshold and square one heatmap, written out independently."""
    height, width = heatmap.shape
    if kernel > 1:
        sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8  # torchvision's default sigma
        offsets = np.arange(kernel) - kernel // 2
        weights = np.exp(-(offsets**2) / (2 * sigma**2))
        weights /= weights.sum()
        padded = np.pad(heatmap, kernel // 2, mode="reflect")
        rows = np.stack([padded[i : i + height] for i in range(kernel)])
        padded = np.tensordot(weights, rows, axes=1)  # vertical pass
        cols = np.stack([padded[:, i : i + width] for i in range(kernel)])
        heatmap = np.tensordot(weights, cols, axes=1)  # horizontal pass
    heatmap = np.abs(heatmap)
    if heatmap.max() > 0:
        heatmap = heatmap / heatmap.max()
    hot_rows, hot_cols = np.nonzero(heatmap > threshold)
    if len(hot_rows) == 0:
        top, bottom, left, right = 0, height - 1, 0, width - 1
    else:
        top, bottom = hot_rows.min(), hot_rows.max()
        left, right = hot_cols.min(), hot_cols.max()
    box_h, box_w = bottom - top + 1, right - left + 1
    side = min(max(box_h, box_w), height, width)
    top = min(max(top + (box_h - side) // 2, 0), height - side)
    left = min(max(left + (box_w - side) // 2, 0), width - side)
    return int(top), int(left), int(side)


def test_single_hot_block_gives_square_grown_by_the_blur():
    heat = torch.zeros(1, 32, 32)
    heat[0, 10:12, 20:22] = 3.0
    # sigma 1.1: two pixels from the block the blurred value is still ~11% of the
    # peak, so the 2x2 block grows to 6x6.
    assert square_boxes(heat).tolist() == [[8, 18, 6]]
    assert square_boxes(heat).tolist() == [list(numpy_box(heat[0].numpy(), 5, 0.02))]
    assert square_boxes(heat).dtype == torch.int64


@pytest.mark.parametrize(
    ("threshold", "box"),
    # Single pixel at (10, 20): after the blur, the corners 2 px away hold 3.6% of the
    # peak, the edge pixels 2 px away 19%, the diagonal neighbours 44%, direct ones 66%.
    [
        (0.02, [8, 18, 5]),
        (0.05, [8, 18, 5]),
        (0.2, [9, 19, 3]),
        (0.5, [9, 19, 3]),
        (0.7, [10, 20, 1]),
    ],
)
def test_threshold_is_respected(threshold, box):
    heat = torch.zeros(1, 32, 32)
    heat[0, 10, 20] = 1.0
    assert square_boxes(heat, threshold=threshold).tolist() == [box]
    assert list(numpy_box(heat[0].numpy(), 5, threshold)) == box


def test_rectangles_become_centred_squares_clamped_at_the_border():
    heat = torch.zeros(4, 32, 32)
    heat[0, 5:9, 2:14] = 1.0  # 4 x 12: 12 x 12 centred vertically (4 px above)
    heat[1, 0:3, 10:26] = -1.0  # at the top border, negative: shifted down to row 0
    heat[2, 29:32, 0:20] = 1.0  # at the bottom: shifted up to end at the last row
    heat[3, 3:30, 14:16] = 1.0  # tall: 27 x 27, centred horizontally (floor)
    boxes = square_boxes(heat, blur_kernel=1)
    assert boxes.tolist() == [[1, 2, 12], [0, 10, 16], [12, 0, 20], [3, 1, 27]]


def test_non_square_image_caps_the_side_at_the_shorter_side():
    heat = torch.zeros(1, 20, 40)
    heat[0, 5:7, :] = 1.0
    assert square_boxes(heat, blur_kernel=1).tolist() == [[0, 10, 20]]


def test_empty_heatmap_gives_the_whole_image():
    heat = torch.zeros(2, 32, 32)
    heat[1, 4, 4] = 1e-30  # tiny but positive: each row is normalised by its own peak
    assert square_boxes(heat).tolist() == [[0, 0, 32], [2, 2, 5]]
    assert square_boxes(torch.zeros(1, 24, 30)).tolist() == [[0, 3, 24]]


def test_square_boxes_match_the_numpy_reference_on_random_heatmaps():
    generator = torch.Generator().manual_seed(0)
    # Sparse blobs of both signs, some touching the border.
    heat = torch.zeros(12, 28, 28)
    for row in range(12):
        top, left = torch.randint(0, 24, (2,), generator=generator).tolist()
        h, w = torch.randint(1, 10, (2,), generator=generator).tolist()
        heat[row, top : top + h, left : left + w] = torch.randn(1, generator=generator)
    heat += (
        1e-3
        * torch.randn(heat.shape, generator=generator)
        * (torch.rand(heat.shape, generator=generator) > 0.99)
    )
    for kernel, threshold in [(5, 0.02), (3, 0.1), (1, 0.02)]:
        boxes = square_boxes(heat, blur_kernel=kernel, threshold=threshold)
        want = [numpy_box(h.double().numpy(), kernel, threshold) for h in heat]
        assert boxes.tolist() == [list(box) for box in want]


# --------------------------------------------------------------------------- crops


def test_crop_images_equals_slicing_and_interpolation():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, 20, 30, generator=generator)
    boxes = torch.tensor([[3, 5, 12], [0, 0, 20], [10, 22, 8]])
    for size in (5, 16):
        crops = crop_images(images, boxes, size)
        assert crops.shape == (3, 3, size, size)
        for image, (top, left, side), crop in zip(images, boxes.tolist(), crops, strict=True):
            patch = image[None, :, top : top + side, left : left + side]
            want = F.interpolate(
                patch, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )[0]
            torch.testing.assert_close(crop, want.clamp(0, 1), rtol=0, atol=1e-6)
    # A box of the crop's own size is the slice itself.
    same = crop_images(images, torch.tensor([[2, 7, 9]] * 3), 9)
    torch.testing.assert_close(same, images[:, :, 2:11, 7:16])


# --------------------------------------------------------------------------- heatmaps


def zennit_position_heatmaps(model, images, layer, channels, positions) -> torch.Tensor:
    """The position heatmap with zennit alone: a forward hook and torch.autograd.grad."""
    from zennit.composites import EpsilonPlusFlat

    net = model.net
    composite = EpsilonPlusFlat(canonizers=canonizers_for(net))
    captured = {}
    handle = model.layer(layer).register_forward_hook(
        lambda _module, _inputs, output: captured.__setitem__("out", output)
    )
    try:
        with composite.context(net) as modified:
            inputs = model.normalize(images).requires_grad_(True)
            modified(inputs)
            out = captured["out"]
            grad_output = torch.zeros_like(out)
            width = out.shape[3]
            for row, (channel, position) in enumerate(zip(channels, positions, strict=True)):
                r, c = divmod(int(position), width)
                grad_output[row, channel, r, c] = out[row, channel, r, c].detach()
            (grad,) = torch.autograd.grad(out, inputs, grad_output)
    finally:
        handle.remove()
    return grad.sum(dim=1)


def peak_rows(model, images, layer, generator):
    """Random live channels, each at the argmax of its activation map (a non-zero unit)."""
    out = layer_output(model, images, layer)
    live = (out.flatten(2).amax(dim=2) > 0).double()  # a random net has dead channels
    channels = torch.multinomial(live, 1, generator=generator)[:, 0]
    positions = out[torch.arange(len(images)), channels].flatten(1).argmax(dim=1)
    return channels, positions, out.shape[2:]


def test_position_heatmaps_equal_zennit_directly(random_demo):
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(6, 3, 32, 32, generator=generator)
    channels, positions, _ = peak_rows(random_demo, images, "layer4", generator)
    positions[-1] = 37  # one arbitrary position too (its activation may be zero)
    heat = position_heatmaps(random_demo, images, "layer4", channels, positions)
    want = zennit_position_heatmaps(random_demo, images, "layer4", channels, positions)
    assert heat.shape == (6, 32, 32)
    assert heat[:-1].abs().amax(dim=(1, 2)).min() > 0
    torch.testing.assert_close(heat, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


@pytest.mark.parametrize(
    # Receptive fields: layer1 = stem conv + two 3x3 convs (7 px, stride 1); layer2
    # adds a stride-2 conv and a 3x3 conv (13 px, centred at twice the position).
    ("layer", "stride", "half"),
    [("layer1", 1, 3), ("layer2", 2, 6)],
)
def test_position_heatmaps_stay_in_the_receptive_field(random_demo, layer, stride, half):
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(5, 3, 32, 32, generator=generator)
    channels, positions, spatial = peak_rows(random_demo, images, layer, generator)
    heat = position_heatmaps(random_demo, images, layer, channels, positions)
    for row, position in enumerate(positions.tolist()):
        r, c = divmod(position, spatial[1])
        window = torch.zeros(32, 32, dtype=torch.bool)
        window[
            max(stride * r - half, 0) : stride * r + half + 1,
            max(stride * c - half, 0) : stride * c + half + 1,
        ] = True
        assert heat[row][~window].abs().max() == 0  # relevance flows along connections only
        assert heat[row][window].abs().max() > 0
        peak = int(heat[row].abs().argmax())
        assert window.flatten()[peak]


def test_position_heatmaps_reject_bad_channels_and_positions(random_demo):
    images = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="channels"):
        position_heatmaps(random_demo, images, "layer4", torch.tensor([0, 8]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="positions"):
        position_heatmaps(
            random_demo, images, "layer4", torch.tensor([0, 1]), torch.tensor([0, 64])
        )
    with pytest.raises(KeyError, match="nolayer"):
        position_heatmaps(
            random_demo, images, "nolayer", torch.tensor([0, 1]), torch.tensor([0, 0])
        )
    # The failed calls left no hooks behind: a forward pass without gradients works.
    assert all(not module._forward_hooks for module in random_demo.net.modules())
    with torch.no_grad():
        random_demo.net(random_demo.normalize(images))


# --------------------------------------------------------------------------- render


@pytest.fixture(scope="module")
def toy_references(random_demo):
    """Smooth random images with sample ids unlike their positions, and their ActMax refs."""
    generator = torch.Generator().manual_seed(4)
    coarse = torch.rand(30, 3, 8, 8, generator=generator)
    images = F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    dataset = InMemoryDataset(images, torch.zeros(30), sample_ids=torch.arange(30) * 3 + 100)
    references = collect_references(random_demo, dataset, ["layer4"], ReferenceConfig(n=5))
    return dataset, references[("actmax", "layer4")]


def test_render_crops_shapes_and_agreement_with_the_parts(random_demo, toy_references):
    dataset, references = toy_references
    config = CropConfig(size=16, batch_size=7)
    channels = [6, 1, 3]
    result = render_crops(Neurons(random_demo, "layer4"), dataset, references, channels, config)
    assert set(result) == set(CROP_KEYS) and "crops" not in result  # boxes, not pixels
    crops = cut_crops(dataset, result["sample_ids"], result["boxes"], 16)
    assert crops.shape == (3, 5, 3, 16, 16) and crops.dtype == torch.uint8
    assert result["boxes"].shape == (3, 5, 3) and result["boxes"].dtype == torch.int64
    assert result["channels"].tolist() == channels
    assert torch.equal(result["sample_ids"], references.sample_ids[channels])
    top, left, side = result["boxes"].unbind(-1)
    assert (top >= 0).all() and (left >= 0).all() and (side >= 1).all()
    assert (top + side <= 32).all() and (left + side <= 32).all()
    # Row (channel 1, reference 3) recomputed from the parts, from the image found by id.
    sample_id, position = references.sample_ids[1, 3], references.positions[1, 3]
    image = dataset.images[(sample_id - 100) // 3][None]
    heat = position_heatmaps(random_demo, image, "layer4", torch.tensor([1]), position[None])
    box = square_boxes(heat)
    assert result["boxes"][1, 3].tolist() == box[0].tolist()
    want = (crop_images(image, box, 16)[0] * 255).round().to(torch.uint8)
    assert torch.equal(crops[1, 3], want)  # the same image at the same box


def test_heatmap_thumbnails_are_block_means_scaled_to_127():
    from monoscope.crops import heatmap_thumbnails

    heat = torch.zeros(2, 4, 4)
    heat[0, :2, :2] = 4.0  # top-left block mean 4
    heat[0, 2:, 2:] = torch.tensor([[-1.0, -1.0], [-1.0, -5.0]])  # mean -2
    small = heat[:, None].reshape(2, 2, 2, 2, 2).mean(dim=(2, 4))  # numpy-free block means
    assert torch.allclose(small[0], torch.tensor([[4.0, 0.0], [0.0, -2.0]]))
    thumbnails = heatmap_thumbnails(heat, 2)
    assert thumbnails.dtype == torch.int8
    assert thumbnails[0].tolist() == [[127, 0], [0, -64]]  # -2/4 * 127 = -63.5 -> -64
    assert thumbnails[1].tolist() == [[0, 0], [0, 0]]  # an all-zero map stays zero


def test_render_crops_keep_the_heatmap_thumbnails_of_every_reference(
    random_demo, toy_references, tmp_path
):
    from monoscope.crops import heatmap_thumbnails, load_crops, save_crops

    dataset, references = toy_references
    channels = [6, 1]
    units = Neurons(random_demo, "layer4")
    plain = render_crops(units, dataset, references, channels, CropConfig(batch_size=3))
    kept = render_crops(
        units, dataset, references, channels, CropConfig(batch_size=3, heatmap_size=8)
    )
    assert torch.equal(plain["boxes"], kept["boxes"])  # the thumbnails change nothing else
    assert kept["heatmaps"].shape == (2, 5, 8, 8) and kept["heatmaps"].dtype == torch.int8
    # Row (channel 1, reference 3) from the parts.
    sample_id, position = references.sample_ids[1, 3], references.positions[1, 3]
    image = dataset.images[(sample_id - 100) // 3][None]
    heat = position_heatmaps(random_demo, image, "layer4", torch.tensor([1]), position[None])
    assert torch.equal(kept["heatmaps"][1, 3], heatmap_thumbnails(heat, 8)[0])
    save_crops(tmp_path / "crops.safetensors", kept, {"layer": "layer4"})
    loaded, _ = load_crops(tmp_path / "crops.safetensors")
    assert torch.equal(loaded["heatmaps"], kept["heatmaps"])
    save_crops(tmp_path / "plain.safetensors", plain, {"layer": "layer4"})
    assert "heatmaps" not in load_crops(tmp_path / "plain.safetensors")[0]


def test_render_crops_do_not_depend_on_the_batch_size(random_demo, toy_references):
    dataset, references = toy_references
    channels = list(range(references.n_channels))
    one, seven = (
        render_crops(
            Neurons(random_demo, "layer4"),
            dataset,
            references,
            channels,
            CropConfig(size=12, batch_size=batch_size),
        )
        for batch_size in (1, 7)
    )
    assert torch.equal(one["boxes"], seven["boxes"])
    assert torch.equal(one["sample_ids"], seven["sample_ids"])
    assert torch.equal(
        cut_crops(dataset, one["sample_ids"], one["boxes"], 12),
        cut_crops(dataset, seven["sample_ids"], seven["boxes"], 12),
    )


def test_render_crops_load_one_batch_of_images_at_a_time(random_demo, toy_references, monkeypatch):
    import monoscope.crops as crops_module

    dataset, references = toy_references
    loaded, at_call = [0], []

    class CountingDataset(InMemoryDataset):
        def __getitem__(self, position):
            loaded[0] += 1
            return super().__getitem__(position)

    counting = CountingDataset(dataset.images, dataset.labels, dataset.sample_ids)
    real = crops_module._position_heatmaps

    def spy(*args, **kwargs):
        at_call.append(loaded[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(crops_module, "_position_heatmaps", spy)
    render_crops(
        Neurons(random_demo, "layer4"), counting, references, [0, 2], CropConfig(batch_size=3)
    )
    # 2 channels x 5 references = 10 rows in batches of 3: 3, 6, 9, 10 images loaded.
    assert at_call == [3, 6, 9, 10]


def test_render_crops_reject_mismatched_or_unfilled_references(random_demo, toy_references):
    dataset, references = toy_references
    config = CropConfig(batch_size=8)
    other_map = TopReferences(
        references.sample_ids, references.scores, references.positions % 16, (4, 4)
    )
    with pytest.raises(ValueError, match="spatial shape"):
        render_crops(Neurons(random_demo, "layer4"), dataset, other_map, [0], config)
    ids = references.sample_ids.clone()
    ids[2, -1] = EMPTY_ID
    unfilled = TopReferences(ids, references.scores, references.positions, (8, 8))
    with pytest.raises(ValueError, match="empty slots"):
        render_crops(Neurons(random_demo, "layer4"), dataset, unfilled, [2], config)
    with pytest.raises(ValueError, match="rows of the references"):
        render_crops(Neurons(random_demo, "layer4"), dataset, references, [8], config)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"size": 0}, "crops.size"),
        ({"blur_kernel": 4}, "crops.blur_kernel"),
        ({"threshold": 1.0}, "crops.threshold"),
        ({"batch_size": 0}, "crops.batch_size"),
    ],
)
def test_crop_config_validation_names_the_key(options, key):
    with pytest.raises(ValueError, match=key):
        CropConfig(**options)


def test_save_and_load_round_trip(tmp_path):
    generator = torch.Generator().manual_seed(5)
    crops = {
        "boxes": torch.randint(0, 20, (2, 3, 3), generator=generator),
        "channels": torch.tensor([4, 1]),
        "sample_ids": torch.randint(0, 100, (2, 3), generator=generator),
    }
    metadata = {"layer": "layer4", "mode": "actmax", "size": 8}
    save_crops(tmp_path / "crops.safetensors", crops, metadata)
    loaded, loaded_metadata = load_crops(tmp_path / "crops.safetensors")
    assert loaded_metadata == metadata
    assert set(loaded) == set(crops)
    for key, value in crops.items():
        assert loaded[key].dtype == value.dtype
        assert torch.equal(loaded[key], value)
    with pytest.raises(ValueError, match="boxes"):
        save_crops(tmp_path / "bad.safetensors", {"channels": crops["channels"]}, metadata)
    with pytest.raises(ValueError, match="sample_ids"):
        save_crops(tmp_path / "bad.safetensors", {"boxes": crops["boxes"]}, metadata)


# --------------------------------------------------------------------------- cutting


def stored_crops(model, dataset, references, layer, channels, config):
    """The crops as the cropping stage stored them before crop files kept boxes only:
    boxes and pixels from the same batch of images, rounded to bytes in the loop."""
    channels = torch.as_tensor(channels)
    n_refs = references.sample_ids.shape[1]
    ids = references.sample_ids[channels].reshape(-1)
    row_channels = channels[:, None].expand(-1, n_refs).reshape(-1)
    positions = references.positions[channels].reshape(-1)
    where = dataset.position_of(ids.numpy())
    crops = []
    for start in range(0, len(ids), config.batch_size):
        batch = slice(start, start + config.batch_size)
        images = torch.stack([dataset[int(p)][0] for p in where[batch]])
        heat = position_heatmaps(model, images, layer, row_channels[batch], positions[batch])
        boxes = square_boxes(heat, config.blur_kernel, config.threshold)
        crops.append((crop_images(images, boxes, config.size) * 255).round().to(torch.uint8))
    return torch.cat(crops).reshape(len(channels), n_refs, 3, config.size, config.size)


def test_cut_crops_equal_the_crops_stored_before(random_demo, toy_references):
    dataset, references = toy_references
    channels = [5, 0, 7, 2]
    for size, batch_size in [(16, 7), (9, 32), (40, 3)]:  # 40: upsampled
        config = CropConfig(size=size, batch_size=batch_size)
        result = render_crops(Neurons(random_demo, "layer4"), dataset, references, channels, config)
        want = stored_crops(random_demo, dataset, references, "layer4", channels, config)
        assert torch.equal(cut_crops(dataset, result["sample_ids"], result["boxes"], size), want)
        # Streamed in any batch size, row by row channel-major, the bytes are the same.
        for rows in (1, 6, 20, 64):
            streamed = list(iter_crops(dataset, result, size, rows))
            assert [len(batch) for batch in streamed[:-1]] == [rows] * (len(streamed) - 1)
            assert torch.equal(torch.cat(streamed), want.reshape(-1, 3, size, size))


class DirectionSAE(torch.nn.Module):
    """A stand-in SAE: only its encoder rows (the directions its features read) matter."""

    def __init__(self, directions):
        super().__init__()
        self.encoder = torch.nn.Parameter(directions, requires_grad=False)


def test_cut_direction_crops_equal_the_crops_stored_before(random_demo, toy_references):
    dataset, references = toy_references
    generator = torch.Generator().manual_seed(6)
    directions = torch.randn(4, 8, generator=generator)  # 4 units reading layer4's 8 channels
    sample_ids = references.sample_ids[:4]
    config = CropConfig(size=16, batch_size=6)
    features = SAEFeatures(random_demo, "layer4", DirectionSAE(directions))
    sae_references = TopReferences(
        sample_ids, references.scores[:4], torch.zeros_like(sample_ids), ()
    )
    result = render_crops(features, dataset, sae_references, [3, 1], config)
    assert result["channels"].tolist() == [3, 1]
    assert torch.equal(result["sample_ids"], sample_ids[[3, 1]])
    assert set(result) == set(CROP_KEYS)
    ids = sample_ids[[3, 1]].reshape(-1)
    images = torch.stack([dataset[int(p)][0] for p in dataset.position_of(ids.numpy())])
    heat = direction_heatmaps(
        random_demo, images, "layer4", directions[[3, 1]].repeat_interleave(5, 0)
    )
    boxes = square_boxes(heat)
    assert torch.equal(result["boxes"].reshape(-1, 3), boxes)
    want = (crop_images(images, boxes, 16) * 255).round().to(torch.uint8)
    cut = cut_crops(dataset, result["sample_ids"], result["boxes"], 16)
    assert torch.equal(cut.reshape(-1, 3, 16, 16), want)


def test_cut_crops_load_only_their_images_and_check_the_boxes(toy_references):
    dataset, _ = toy_references
    loaded = []

    class CountingDataset(InMemoryDataset):
        def __getitem__(self, position):
            loaded.append(position)
            return super().__getitem__(position)

    counting = CountingDataset(dataset.images, dataset.labels, dataset.sample_ids)
    crops = {
        "sample_ids": torch.tensor([[103, 160], [100, 103]]),
        "boxes": torch.tensor([[[0, 0, 32], [4, 2, 10]], [[20, 20, 12], [1, 1, 1]]]),
    }
    batches = iter_crops(counting, crops, 8, 3)
    first = next(batches)
    assert loaded == [1, 20, 0] and first.shape == (3, 3, 8, 8)
    assert [len(batch) for batch in batches] == [1] and loaded == [1, 20, 0, 1]
    empty = cut_crops(counting, torch.zeros(0, 5, dtype=torch.int64), torch.zeros(0, 5, 3), 8)
    assert empty.shape == (0, 5, 3, 8, 8) and empty.dtype == torch.uint8
    with pytest.raises(ValueError, match="outside the 32 x 32 images"):
        cut_crops(dataset, torch.tensor([100]), torch.tensor([[20, 0, 13]]), 8)
    with pytest.raises(ValueError, match="boxes"):
        cut_crops(dataset, torch.tensor([100, 103]), torch.tensor([[0, 0, 4]]), 8)


def test_crop_files_hold_a_few_bytes_per_row(tmp_path):
    """Boxes, channels and sample ids only: ~32 bytes a row, not 3 * size**2."""
    channels, n = 32, 100
    crops = {
        "boxes": torch.randint(0, 200, (channels, n, 3)),
        "channels": torch.arange(channels),
        "sample_ids": torch.randint(0, 50_000, (channels, n)),
    }
    path = tmp_path / "shard.safetensors"
    save_crops(path, crops, {"layer": "layer4", "shard": 1, "shards": 64})
    per_row = path.stat().st_size / (channels * n)
    assert per_row < 33  # 24 (box) + 8 (sample id) + 8 / n (channel) + the header
    # ImageNet scale: 2048 neurons x 100 references in well under 1 GB (7 MB).
    assert per_row * 2048 * n < 10e6


def test_streamed_embedding_equals_embedding_all_crops_at_once(toy_references):
    from monoscope.embedders import Embedder, embed_batches, embed_images

    dataset, references = toy_references
    torch.manual_seed(7)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    embedder = Embedder("toy", net, net, 8, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    boxes = torch.tensor([[0, 0, 32], [4, 2, 10], [20, 20, 12], [1, 1, 7], [3, 9, 17]])
    crops = {"sample_ids": references.sample_ids[:2], "boxes": boxes.expand(2, 5, 3)}
    whole = embed_images(embedder, cut_crops(dataset, crops["sample_ids"], crops["boxes"], 12), 4)
    streamed = embed_batches(embedder, iter_crops(dataset, crops, 12, 4), (3, 12, 12))
    assert torch.equal(streamed.reshape(2, 5, -1), whole)
    none = embed_batches(embedder, iter([]), (3, 12, 12))
    assert none.shape == (0, 5) and none.dtype == torch.float32
