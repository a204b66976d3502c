"""File input and output: atomic writes, safetensors with metadata, JSON.

Every output is first written to a temporary file in the destination directory and
then renamed into place, so an interrupted job never leaves a file that looks
complete. Nothing is pickled: tensors go to safetensors, tables to CSV, small
records to JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

# The first bytes of the files that are most often handed in by mistake.
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_PICKLE_MAGIC = (
    b"\x80"  # a raw pickle (protocol 2+), torch.save(..., _use_new_zipfile_serialization=False)
)


class TensorFileError(ValueError):
    """A file that should be safetensors and is not readable as such; the message names
    the file, what is wrong (truncated, another format) and what writes a good one."""


def _unreadable(path: Path, error: Exception) -> TensorFileError:
    """A :class:`TensorFileError` for ``path`` that safetensors refused with ``error``."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC):
        reason = (
            "it is a PyTorch pickle (torch.save), not safetensors. Convert it once: "
            "safetensors.torch.save_file(torch.load(f, weights_only=True), out)"
        )
    elif size < 8:
        reason = f"it has {size} bytes, fewer than a safetensors header (empty or truncated)"
    else:
        header_length = int.from_bytes(head, "little")
        if header_length > size - 8:
            reason = (
                f"its header announces {header_length} bytes but the file has {size}: "
                "truncated (an interrupted copy or job) or not safetensors at all"
            )
        else:
            reason = f"safetensors cannot parse it ({error}): truncated or corrupt"
    return TensorFileError(f"{path}: not a readable safetensors file: {reason}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# safetensors keeps the metadata in a Rust HashMap, so a header with several metadata
# keys is written in a different order in every process and files are not byte-identical
# from run to run. We store the whole record under this one key, as sorted JSON.
METADATA_KEY = "monoscope"


def save_tensors(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write tensors to a safetensors file atomically and deterministically.

    ``metadata`` is any JSON-serialisable record; it comes back from :func:`load_tensors`
    as it was (strings stay strings). The same tensors and metadata give the same bytes.
    """
    encoded = {METADATA_KEY: json.dumps(dict(metadata or {}), sort_keys=True)}
    contiguous = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}
    with atomic_path(path) as temporary:
        save_file(contiguous, str(temporary), metadata=encoded)


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file; returns ``(tensors, metadata)`` with the metadata decoded."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"tensor file not found: {path}")
    tensors = {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                tensors[key] = handle.get_tensor(key)
            raw = handle.metadata() or {}
    except SafetensorError as error:
        raise _unreadable(path, error) from error
    return tensors, _decode_metadata(raw)


def require_entries(
    path: str | os.PathLike,
    found: Mapping[str, Any],
    required: Sequence[str],
    what: str,
    written_by: str,
) -> None:
    """Raise :class:`TensorFileError` naming ``path`` when ``found`` lacks ``required`` keys.

    ``found`` is a file's tensors or metadata; ``what`` says what the file should hold and
    ``written_by`` which rule or function writes one, so a foreign or stale file reads as
    one line instead of a ``KeyError`` deep in a job.
    """
    missing = [key for key in required if key not in found]
    if missing:
        raise TensorFileError(
            f"{path}: not {what} (missing {missing}; it has {sorted(found)[:10]}); "
            f"such files are written by {written_by}"
        )


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded metadata of a safetensors file, reading its header only."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"tensor file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return _decode_metadata(handle.metadata() or {})
    except SafetensorError as error:
        raise _unreadable(path, error) from error


def _decode_metadata(raw: Mapping[str, str]) -> dict[str, Any]:
    if set(raw) == {METADATA_KEY}:
        return json.loads(raw[METADATA_KEY])
    metadata = {}
    for key, value in raw.items():  # written by another tool: one JSON value per key
        try:
            metadata[key] = json.loads(value)
        except json.JSONDecodeError:
            metadata[key] = value
    return metadata


def write_json(path: str | os.PathLike, record: Any) -> None:
    """Write a JSON file atomically, keys sorted for stable bytes."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def merge_channel_shards(
    parts: list[Mapping[str, torch.Tensor]], what: str, expected: Sequence[int] | None = None
) -> dict[str, torch.Tensor]:
    """Concatenate neuron-range shards along their first dimension, in channel order.

    Every part holds a ``channels`` entry; together they must cover ``expected`` (by
    default ``0..C-1``; SAE shards cover the alive features) exactly once, otherwise a
    shard is missing or stale and ``what`` names the stage to rerun.
    """
    if not parts:
        raise ValueError(f"no {what} shards to merge")
    merged = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
    order = torch.argsort(merged["channels"])
    merged = {key: value[order] for key, value in merged.items()}
    wanted = torch.arange(len(order)) if expected is None else torch.tensor(sorted(expected))
    if not torch.equal(merged["channels"], wanted.to(merged["channels"].dtype)):
        raise ValueError(f"{what} shards do not cover every upper channel exactly once; rerun them")
    return merged


def guard_checkpoint(
    checkpoint: str | os.PathLike, inputs: Sequence[str | os.PathLike], params: Any
) -> bool:
    """Keep a job's resume checkpoint only if it was written for the same inputs and params.

    A workflow job resumes from its checkpoint after an interruption; but when it reruns
    because an input was regenerated (new file, new modification time) or a parameter
    changed, the checkpoint belongs to another computation and must go. The job's
    fingerprint (each input's size and modification time, and the params) is kept next
    to the checkpoint as ``<checkpoint>.job.json``.

    Returns whether an existing checkpoint was kept. Call :func:`release_checkpoint`
    once the job's outputs are written.
    """
    checkpoint = Path(checkpoint)
    sidecar = checkpoint.with_name(checkpoint.name + ".job.json")
    fingerprint = json.loads(
        json.dumps(
            {
                "inputs": {
                    str(path): [Path(path).stat().st_size, Path(path).stat().st_mtime_ns]
                    for path in inputs
                },
                "params": params,
            },
            sort_keys=True,
        )
    )
    kept = checkpoint.exists() and sidecar.exists() and read_json(sidecar) == fingerprint
    if not kept:
        if checkpoint.exists():
            logging.getLogger(__name__).warning(
                "discarding %s: written for other inputs or options", checkpoint
            )
        checkpoint.unlink(missing_ok=True)
        write_json(sidecar, fingerprint)
    return kept


def release_checkpoint(checkpoint: str | os.PathLike) -> None:
    """Remove a finished job's checkpoint and its fingerprint."""
    checkpoint = Path(checkpoint)
    checkpoint.unlink(missing_ok=True)
    checkpoint.with_name(checkpoint.name + ".job.json").unlink(missing_ok=True)
