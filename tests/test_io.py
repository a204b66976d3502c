"""Tests of monoscope.io: atomic writes, safetensors with JSON metadata, JSON files."""

from __future__ import annotations

import json
import re

import pytest
import torch

from monoscope.io import (
    TensorFileError,
    atomic_path,
    load_tensors,
    read_json,
    read_metadata,
    require_entries,
    save_tensors,
    write_json,
)


def _leftovers(directory, keep):
    """Names in ``directory`` other than ``keep`` (e.g. temporary files)."""
    return sorted(path.name for path in directory.iterdir() if path.name not in keep)


# --------------------------------------------------------------------------- tensors


def test_save_load_tensors_round_trip(tmp_path):
    tensors = {
        "floats": torch.randn(3, 4),
        "halves": torch.randn(5, dtype=torch.float16),
        "ints": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "flags": torch.tensor([True, False, True]),
        "nested/name": torch.ones(2),
    }
    path = tmp_path / "tensors.safetensors"
    save_tensors(path, tensors)
    loaded, metadata = load_tensors(path)
    assert set(loaded) == set(tensors)
    for key, value in tensors.items():
        assert loaded[key].dtype == value.dtype, key
        assert loaded[key].shape == value.shape, key
        assert torch.equal(loaded[key], value), key
    assert metadata == {}
    assert _leftovers(tmp_path, {"tensors.safetensors"}) == []


def test_save_tensors_accepts_views_and_grad_tensors(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    transposed = base.T  # not contiguous
    with_grad = torch.randn(2, 2, requires_grad=True)
    path = tmp_path / "views.safetensors"
    save_tensors(path, {"transposed": transposed, "grad": with_grad})
    loaded, _ = load_tensors(path)
    assert torch.equal(loaded["transposed"], transposed)
    assert torch.equal(loaded["grad"], with_grad.detach())
    assert not loaded["grad"].requires_grad


def test_metadata_json_values_are_decoded(tmp_path):
    metadata = {
        "name": "demo_cnn",
        "count": 3,
        "ratio": 0.25,
        "flag": True,
        "nothing": None,
        "widths": [16, 32, 32, 8],
        "nested": {"a": [1, 2], "b": {"c": "d"}},
        "spatial_shapes": {"actmax/layer4": [4, 4], "actmax/fc": []},
    }
    path = tmp_path / "meta.safetensors"
    save_tensors(path, {"x": torch.zeros(1)}, metadata=metadata)
    _, loaded = load_tensors(path)
    assert loaded == metadata
    assert isinstance(loaded["count"], int)
    assert isinstance(loaded["flag"], bool)
    assert loaded["name"] == "demo_cnn"


def test_plain_string_metadata_stays_a_string(tmp_path):
    path = tmp_path / "meta.safetensors"
    metadata = {"model": "torchvision:resnet18", "path": "/data/x y.png", "empty": ""}
    save_tensors(path, {"x": torch.zeros(1)}, metadata=metadata)
    _, loaded = load_tensors(path)
    assert loaded == metadata


@pytest.mark.parametrize("value", ["42", "1.0", "true", "null", "[1, 2]"])
def test_json_looking_string_metadata_round_trips(tmp_path, value):
    path = tmp_path / "meta.safetensors"
    save_tensors(path, {"x": torch.zeros(1)}, metadata={"version": value})
    _, loaded = load_tensors(path)
    assert loaded["version"] == value


def test_save_tensors_replaces_an_existing_file(tmp_path):
    path = tmp_path / "t.safetensors"
    save_tensors(path, {"x": torch.zeros(2)}, metadata={"run": 1})
    save_tensors(path, {"y": torch.ones(3)}, metadata={"run": 2})
    loaded, metadata = load_tensors(path)
    assert set(loaded) == {"y"}
    assert torch.equal(loaded["y"], torch.ones(3))
    assert metadata == {"run": 2}
    assert _leftovers(tmp_path, {"t.safetensors"}) == []


def test_failed_save_leaves_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "t.safetensors"
    save_tensors(path, {"x": torch.arange(3)})
    before = path.read_bytes()
    shared = torch.zeros(4)
    # safetensors refuses tensors that share memory; the write must fail cleanly.
    with pytest.raises(RuntimeError):
        save_tensors(path, {"a": shared, "b": shared})
    assert path.read_bytes() == before
    assert _leftovers(tmp_path, {"t.safetensors"}) == []


def test_save_tensors_creates_parent_directories(tmp_path):
    path = tmp_path / "a" / "b" / "t.safetensors"
    save_tensors(path, {"x": torch.ones(1)})
    loaded, _ = load_tensors(path)
    assert torch.equal(loaded["x"], torch.ones(1))


def test_load_tensors_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "missing.safetensors"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_tensors(path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_tensors(str(path))


# --------------------------------------------------------------------------- atomic_path


def test_atomic_path_renames_into_place_on_success(tmp_path):
    path = tmp_path / "out.txt"
    with atomic_path(path) as temporary:
        assert temporary.parent == path.parent
        assert temporary != path
        assert not path.exists()
        temporary.write_text("done")
    assert path.read_text() == "done"
    assert not temporary.exists()
    assert _leftovers(tmp_path, {"out.txt"}) == []


def test_atomic_path_leaves_destination_untouched_when_body_raises(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(path) as temporary:
            temporary.write_text("half-written new content")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert not temporary.exists()
    assert _leftovers(tmp_path, {"out.txt"}) == []


def test_atomic_path_creates_nothing_when_body_raises_without_destination(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    with pytest.raises(ValueError):
        with atomic_path(path) as temporary:
            temporary.write_text("partial")
            raise ValueError("interrupted")
    assert not path.exists()
    assert list(path.parent.iterdir()) == []


# --------------------------------------------------------------------------- JSON


def test_write_read_json_round_trip(tmp_path):
    record = {
        "zeta": [1, 2.5, None, True],
        "alpha": {"nested": {"b": 2, "a": 1}},
        "text": "ünïcödé",
        "number": 7,
    }
    path = tmp_path / "record.json"
    write_json(path, record)
    assert read_json(path) == record
    assert read_json(str(path)) == record
    text = path.read_text()
    assert text.endswith("\n")
    assert json.loads(text) == record
    # Keys are sorted for stable bytes.
    assert (
        text.index('"alpha"') < text.index('"number"') < text.index('"text"') < text.index('"zeta"')
    )
    assert text.index('"a"') < text.index('"b"')
    assert _leftovers(tmp_path, {"record.json"}) == []


def test_write_json_is_stable_for_equal_records(tmp_path):
    write_json(tmp_path / "one.json", {"b": 1, "a": [3, 2]})
    write_json(tmp_path / "two.json", {"a": [3, 2], "b": 1})
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()


def test_write_json_failure_leaves_previous_file(tmp_path):
    path = tmp_path / "record.json"
    write_json(path, {"ok": True})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert read_json(path) == {"ok": True}
    assert _leftovers(tmp_path, {"record.json"}) == []


def test_read_json_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")


def test_same_tensors_and_metadata_give_identical_bytes_across_processes(tmp_path):
    import subprocess
    import sys

    code = (
        "import torch, sys\n"
        "from monoscope.io import save_tensors\n"
        "save_tensors(sys.argv[1], {'b': torch.arange(3), 'a': torch.ones(2)},"
        " {'zeta': 1, 'alpha': [1, 2], 'mid': 'x', 'n': None, 'shard': 3})\n"
    )
    paths = [tmp_path / f"{i}.safetensors" for i in range(3)]
    for path in paths:
        subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    assert paths[0].read_bytes() == paths[1].read_bytes() == paths[2].read_bytes()


def _good_file(tmp_path):
    path = tmp_path / "good.safetensors"
    save_tensors(path, {"x": torch.arange(100.0)}, {"kind": "toy"})
    return path


def test_truncated_file_names_the_path_and_truncation(tmp_path):
    data = _good_file(tmp_path).read_bytes()
    for cut in (4, 40, len(data) - 10):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(data[:cut])
        with pytest.raises(TensorFileError, match=re.escape(str(path))) as error:
            load_tensors(path)
        assert "truncated" in str(error.value)
    with pytest.raises(TensorFileError, match="truncated"):
        read_metadata(tmp_path / "cut40.safetensors")


def test_pickled_torch_file_is_named_and_never_unpickled(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"x": torch.zeros(2)}, path)
    with pytest.raises(TensorFileError, match=r"model\.pt: .*PyTorch pickle"):
        load_tensors(path)


def test_require_entries_names_file_missing_keys_and_writer(tmp_path):
    path = _good_file(tmp_path)
    tensors, _ = load_tensors(path)
    require_entries(path, tensors, ["x"], "a toy file", "save_toy")
    with pytest.raises(
        TensorFileError, match=r"good\.safetensors: not a toy file \(missing \['y'\]"
    ):
        require_entries(path, tensors, ["x", "y"], "a toy file", "save_toy")
