"""Search the units of an experiment by text, image or class (``monoscope search``).

A query becomes one vector in the space of the experiment's catalogue (the reference
embedder's, :mod:`monoscope.catalogue`), and the units whose mean reference directions
are nearest to it (cosine) are the answer, across all kinds: neurons, virtual neurons
and SAE features side by side.

* text: through the embedder's text tower and the label templates (CLIP with
  ``projected`` pooling only);
* an image file: through the embedder, as the references' crops were;
* a class name: its vocabulary vector (a class prototype, or the text vector of the
  name), from the experiment's ``labels/<embedder>.safetensors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from monoscope.catalogue import load_catalogue, load_directions
from monoscope.vocabulary import DEFAULT_TEMPLATES, load_vocabulary, text_vocabulary


@dataclass(frozen=True)
class Match:
    """One unit found: its id, kind, label and cosine similarity to the query, and the
    path of its atlas page."""

    id: str
    kind: str
    label: str
    score: float
    page: Path


def nearest_units(
    directions: torch.Tensor, query: torch.Tensor, top: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and cosine similarities of the ``top`` rows of ``directions`` ``[U, D]``
    nearest to ``query`` ``[D]``, best first, ties in index order."""
    if directions.ndim != 2 or query.shape != (directions.shape[1],):
        raise ValueError(
            f"expected directions [U, D] and a query [D], got {tuple(directions.shape)} and "
            f"{tuple(query.shape)}"
        )
    if top < 1:
        raise ValueError(f"top must be positive, got {top}")
    rows = torch.nn.functional.normalize(directions.double(), dim=-1)
    similarity = rows @ torch.nn.functional.normalize(query.double(), dim=0)
    order = torch.sort(similarity, descending=True, stable=True).indices[:top]
    return order, similarity[order]


class UnitIndex:
    """The catalogue and directions of one experiment's results folder, and its atlas."""

    def __init__(self, results: str | Path) -> None:
        self.results = Path(results)
        catalogue_path = self.results / "evaluation" / "catalogue.json"
        directions_path = self.results / "evaluation" / "directions.safetensors"
        for path in (catalogue_path, directions_path):
            if not path.exists():
                raise FileNotFoundError(
                    f"{path} is missing: run the workflow's evaluation first (snakemake "
                    f"{catalogue_path}) or point --results at an experiment's results folder"
                )
        self.catalogue = load_catalogue(catalogue_path)
        self.directions, ids = load_directions(directions_path)
        self.records = self.catalogue["units"]
        if ids != [record["id"] for record in self.records]:
            raise ValueError(
                f"{directions_path} and {catalogue_path} list different units; rerun evaluate"
            )
        self.space = self.catalogue["space"]

    def vocabulary(self):
        return load_vocabulary(self.results / "labels" / f"{self.space}.safetensors")[0]

    def embedder(self, device: str = "cpu"):
        from monoscope.config import from_mapping
        from monoscope.embedders import EmbedderConfig, build_embedder

        if "embedder" not in self.catalogue:
            raise ValueError("the catalogue does not record its embedder; rerun evaluate")
        return build_embedder(
            self.space, from_mapping(EmbedderConfig, self.catalogue["embedder"]), device
        )

    def text_query(self, text: str, templates: Sequence[str] = DEFAULT_TEMPLATES) -> torch.Tensor:
        embedder = self.embedder()
        if not embedder.has_text:
            raise ValueError(
                f"the '{self.space}' embedder of {self.results} embeds no text (only open_clip "
                "with pooling: projected does); search with --class or --image"
            )
        return text_vocabulary(embedder, [text], templates).embeddings[0]

    def image_query(self, path: str | Path) -> torch.Tensor:
        from PIL import Image

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no image file {path}")
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        images = torch.from_numpy(pixels).permute(2, 0, 1)[None]
        return self.embedder()(images)[0]

    def class_query(self, name: str) -> torch.Tensor:
        vocabulary = self.vocabulary()
        wanted = name.replace("_", " ").lower()
        for entry, vector in zip(vocabulary.names, vocabulary.embeddings, strict=True):
            if entry.lower() == wanted:
                return vector
        shown = ", ".join(vocabulary.names[:20]) + (" ..." if len(vocabulary.names) > 20 else "")
        raise ValueError(f"'{name}' is not in the label vocabulary of {self.results} ({shown})")

    def search(self, query: torch.Tensor, top: int = 10) -> list[Match]:
        order, scores = nearest_units(self.directions, query, top)
        matches = []
        for index, score in zip(order.tolist(), scores.tolist(), strict=True):
            record = self.records[index]
            page = self.results / "atlas" / "units" / f"{record['id']}.html"
            matches.append(Match(record["id"], record["kind"], record["label"], score, page))
        return matches
