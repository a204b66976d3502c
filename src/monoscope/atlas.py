"""The unit atlas: a static HTML site of every unit, opened from disk, no server.

``index.html`` lists every unit of the catalogue (:mod:`monoscope.catalogue`) with its
kind, layer, label and scores; the table sorts by any column and filters by text and
kind in the browser (also from the address: ``index.html?kind=pure&q=7&sort=purity``).
``units/<id>.html`` shows one unit: its labels and scores, its references (the images,
their relevance crops and the first references' heatmaps), a neuron's virtual neurons
side by side with their own references, its figures (crops, virtual neurons, circuit
UMAP, where the workflow drew them), and links to its neuron, its virtual neurons and
the units most similar to it.

Images stay small: one JPEG sprite per neuron or SAE feature (``img/<id>.jpg``, rows: image,
crop, heatmap; one column per reference shown by any unit of its family), cut into
tiles by the pages. A virtual neuron's references are its neuron's, so it shares its
neuron's sprite.
"""

from __future__ import annotations

import html
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROWS = ("image", "crop", "heatmap")  # the sprite's rows, top to bottom
SPRITE_FORMAT = "jpg"  # photos and heatmaps: JPEG is several times smaller than PNG
SPRITE_QUALITY = 85
VIRTUAL_CROPS = 6  # crops of each virtual neuron on its neuron's page
SORTABLE = (
    "id",
    "kind",
    "layer",
    "unit",
    "k",
    "label",
    "score",
    "references",
    "majority",
    "purity",
    "clarity",
    "polysemanticity",
    "redundancy",
)


@dataclass(frozen=True)
class AtlasConfig:
    """Options of the atlas.

    Parameters
    ----------
    thumbnail : side in pixels of a reference's image, crop and heatmap.
    references : references shown per unit, its first (in reference order).
    heatmaps : of those, how many get a relevance heatmap.
    """

    thumbnail: int = 32
    references: int = 20
    heatmaps: int = 8

    def __post_init__(self) -> None:
        if self.thumbnail < 8:
            raise ValueError(f"atlas.thumbnail must be at least 8 pixels, got {self.thumbnail}")
        if self.references < 1:
            raise ValueError(f"atlas.references must be positive, got {self.references}")
        if self.heatmaps < 0:
            raise ValueError(f"atlas.heatmaps must be non-negative, got {self.heatmaps}")


@dataclass
class SpritePlan:
    """The references of one family (a neuron or an SAE feature) that its sprite holds.

    ``slots``: positions in the family's references, one sprite column each, in order;
    ``heatmap_slots``: those that get a heatmap.
    """

    slots: list[int] = field(default_factory=list)
    heatmap_slots: list[int] = field(default_factory=list)

    def column(self, slot: int) -> int:
        return self.slots.index(slot)


def plan_sprites(records: Sequence[Mapping], config: AtlasConfig) -> dict[str, SpritePlan]:
    """One :class:`SpritePlan` per family (``base`` id): the first ``config.references``
    slots of each of its units, and the first ``config.heatmaps`` of those for heatmaps.

    The heatmaps cost nothing here: the crop jobs keep a thumbnail of every reference's
    heatmap (:attr:`monoscope.crops.CropConfig.heatmap_size`).
    """
    shown: dict[str, set[int]] = {}
    heated: dict[str, set[int]] = {}
    for record in records:
        slots = list(record["slots"])[: config.references]
        shown.setdefault(record["base"], set()).update(slots)
        heated.setdefault(record["base"], set()).update(slots[: config.heatmaps])
    return {base: SpritePlan(sorted(shown[base]), sorted(heated[base])) for base in sorted(shown)}


def heatmap_colours(heatmap: np.ndarray) -> np.ndarray:
    """A relevance map ``[H, W]`` as uint8 RGB ``[H, W, 3]``: positive red, negative blue,
    white at zero, scaled by the map's largest absolute value."""
    heatmap = np.asarray(heatmap, dtype=np.float64)
    scale = np.abs(heatmap).max()
    value = heatmap / scale if scale > 0 else np.zeros_like(heatmap)
    positive, negative = np.clip(value, 0, 1), np.clip(-value, 0, 1)
    rgb = np.stack([1 - negative, 1 - positive - negative, 1 - positive], axis=-1)
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def overlay(image: np.ndarray, colours: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """A heatmap's colours ``[H, W, 3]`` over the grey of its image ``[H, W, 3]`` (uint8),
    so that the relevance shows where in the image it lies."""
    grey = np.asarray(image, dtype=np.float64).mean(axis=-1, keepdims=True)
    mixed = alpha * np.asarray(colours, dtype=np.float64) + (1 - alpha) * grey
    return np.round(np.clip(mixed, 0, 255)).astype(np.uint8)


def sprite_array(
    images: np.ndarray,
    crops: np.ndarray | None,
    heatmaps: Mapping[int, np.ndarray],
    size: int,
) -> np.ndarray:
    """The sprite ``[rows * size, columns * size, 3]`` uint8 of one family.

    ``images`` and ``crops`` are uint8 ``[columns, size, size, 3]``; ``heatmaps`` maps a
    column to its RGB heatmap ``[size, size, 3]`` (other columns stay white). Without
    ``crops`` (units whose references are whole images) the sprite is the image row alone.
    """
    columns = len(images)
    if images.shape[1:] != (size, size, 3) or (crops is not None and crops.shape != images.shape):
        raise ValueError(
            f"expected images and crops [columns, {size}, {size}, 3], got {images.shape} and "
            f"{None if crops is None else crops.shape}"
        )
    rows = len(ROWS) if crops is not None else 1
    sprite = np.full((rows * size, max(columns, 1) * size, 3), 255, dtype=np.uint8)
    for column in range(columns):
        left = column * size
        sprite[0:size, left : left + size] = images[column]
        if crops is None:
            continue
        sprite[size : 2 * size, left : left + size] = crops[column]
        if column in heatmaps:
            sprite[2 * size : 3 * size, left : left + size] = heatmaps[column]
    return sprite


# --------------------------------------------------------------------------- pages

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.2em; color: #222; }
a { color: #1a55a0; text-decoration: none; } a:hover { text-decoration: underline; }
table.units { border-collapse: collapse; font-size: 0.9em; }
table.units th, table.units td { padding: 0.2em 0.6em; border-bottom: 1px solid #ddd; }
table.units th { cursor: pointer; background: #f3f3f3; position: sticky; top: 0; }
table.units td.num { text-align: right; font-variant-numeric: tabular-nums; }
.controls { margin: 0.6em 0; } .controls input { width: 20em; }
.t { display: inline-block; margin: 1px; vertical-align: top; outline: 1px solid #ccc; }
.strip { white-space: nowrap; overflow-x: auto; }
.virtuals { display: flex; flex-wrap: wrap; gap: 1em; }
.virtual { border: 1px solid #ddd; padding: 0.4em; max-width: 30em; }
.scores td { padding: 0.1em 0.8em 0.1em 0; }
figure { display: inline-block; margin: 0.5em; } figure img { max-width: 40em; }
"""

_INDEX_SCRIPT = """
const UNITS = JSON.parse(document.getElementById('units-data').textContent);
const COLUMNS = JSON.parse(document.getElementById('columns-data').textContent);
const body = document.querySelector('#units tbody');
const search = document.getElementById('search');
const kind = document.getElementById('kind');
let sortKey = 'id', ascending = true;
function cell(unit, key) {
  const value = unit[key];
  if (key === 'id') return `<a href="units/${unit.id}.html">${unit.id}</a>`;
  if (value === null || value === undefined) return '–';
  return typeof value === 'number' && !Number.isInteger(value) ? value.toFixed(3) : String(value)
    .replace(/&/g, '&amp;').replace(/</g, '&lt;');
}
function render() {
  const words = search.value.toLowerCase().split(/\\s+/).filter(Boolean);
  const wanted = kind.value;
  const rows = UNITS.filter(u => (!wanted || u.kind === wanted) && words.every(w =>
    [u.id, u.kind, u.label, u.majority, u.layer].join(' ').toLowerCase().includes(w)));
  rows.sort((a, b) => {
    const x = a[sortKey], y = b[sortKey];
    if (x === y) return 0;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    return (x < y ? -1 : 1) * (ascending ? 1 : -1);
  });
  body.innerHTML = rows.map(u => '<tr data-kind="' + u.kind + '">' + COLUMNS.map(key =>
    `<td class="${typeof u[key] === 'number' ? 'num' : ''}">${cell(u, key)}</td>`).join('') +
    '</tr>').join('');
  document.getElementById('count').textContent = rows.length + ' of ' + UNITS.length + ' units';
  document.body.dataset.visible = rows.length;
}
document.querySelectorAll('#units th').forEach(th => th.addEventListener('click', () => {
  ascending = sortKey === th.dataset.key ? !ascending : true;
  sortKey = th.dataset.key;
  render();
}));
search.addEventListener('input', render);
kind.addEventListener('change', render);
const query = new URLSearchParams(window.location.search);
search.value = query.get('q') || '';
kind.value = query.get('kind') || '';
if (query.get('sort')) { sortKey = query.get('sort'); ascending = query.get('order') !== 'desc'; }
render();
"""

# Sets data-images-loaded / data-images-failed on <body> once every <img> has settled,
# so that a headless browser (tests/test_atlas_browser.py) can check them in the DOM.
_IMAGE_CHECK = """
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  document.body.dataset.imagesLoaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.imagesFailed = images.filter(i => !(i.complete && i.naturalWidth > 0)).length;
});
"""


def _page(title: str, body: str, depth: int) -> str:
    prefix = "../" * depth
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        f"<link rel='stylesheet' href='{prefix}atlas.css'></head>\n<body>\n{body}\n"
        f"<script>{_IMAGE_CHECK}</script>\n</body></html>\n"
    )


def _number(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _sprite_style(base: str, size: int, depth: int) -> str:
    """The page's tile class: every tile is a window onto its family's sprite.

    One hidden ``<img>`` of the sprite lets the browser (and the browser test) report
    whether it loaded; the tiles reuse the cached file.
    """
    url = f"{'../' * depth}img/{base}.{SPRITE_FORMAT}"
    return (
        f"<style>.t {{ width: {size}px; height: {size}px; background-image: url('{url}'); }}"
        f"</style>\n<img class='sprite' src='{url}' alt='' hidden>"
    )


def _tile(column: int, row: int, size: int) -> str:
    return f"<span class='t' style='background-position:-{column * size}px -{row * size}px'></span>"


def _strip(record, plan: SpritePlan, row: int, config: AtlasConfig, limit=None) -> str:
    slots = list(record["slots"])[: limit or config.references]
    if row == ROWS.index("heatmap"):
        slots = [slot for slot in slots if slot in plan.heatmap_slots]
    tiles = [_tile(plan.column(slot), row, config.thumbnail) for slot in slots]
    return "<div class='strip'>" + "".join(tiles) + "</div>"


def _unit_link(unit_id: str, depth: int = 1) -> str:
    prefix = "" if depth == 1 else "units/"
    return f"<a href='{prefix}{html.escape(unit_id)}.html'>{html.escape(unit_id)}</a>"


def unit_page(
    record: Mapping,
    plans: Mapping[str, SpritePlan],
    children: Sequence[Mapping],
    figures: Sequence[tuple[str, str]],
    config: AtlasConfig,
    experiment: str,
) -> str:
    """The HTML of one unit's page (``units/<id>.html``)."""
    plan = plans[record["base"]]
    labels = ", ".join(
        f"<b>{html.escape(name)}</b> ({score:.3f})" for name, score in record["labels"]
    )
    scores = [
        ("kind", record["kind"]),
        ("layer", record["layer"]),
        ("neuron", record.get("neuron")),
        ("feature", record.get("feature")),
        ("dimension", record.get("dimension")),
        ("k / cluster", None if record["k"] is None else f"{record['k']} / {record['cluster']}"),
        ("references", record["references"]),
        ("majority class", record["majority"]),
        ("purity", record["purity"]),
        ("label is the majority class", record["label_match"]),
        ("clarity", record["clarity"]),
        ("polysemanticity", record["polysemanticity"]),
        ("redundancy", record["redundancy"]),
    ]
    rows = "".join(
        f"<tr><td>{name}</td><td>{_number(value)}</td></tr>"
        for name, value in scores
        if value is not None or name in ("clarity",)
    )
    parts = [
        _sprite_style(record["base"], config.thumbnail, depth=1),
        f"<p><a href='../index.html'>atlas of {html.escape(experiment)}</a></p>",
        f"<h1 id='unit' data-unit='{html.escape(record['id'])}'>{html.escape(record['id'])}</h1>",
        f"<p class='labels'>labels: {labels}</p>",
        f"<table class='scores'>{rows}</table>",
    ]
    if record["base"] != record["id"]:
        parts.append(f"<p>a virtual neuron of {_unit_link(record['base'])}</p>")
    parts.append(f"<h2>References ({min(record['references'], config.references)} shown)</h2>")
    # Units whose references are whole images (contrastive dimensions) have no crops.
    shown_rows = ROWS if record.get("crops", True) else ROWS[:1]
    for row, name in enumerate(shown_rows):
        parts.append(f"<h3>{name}s</h3>" + _strip(record, plan, row, config))
    if children:
        parts.append("<h2>Virtual neurons</h2>")
        groups: dict[str, list[Mapping]] = {}
        for child in children:
            groups.setdefault(child["group"], []).append(child)
        for group, members in groups.items():
            blocks = "".join(
                "<div class='virtual'>"
                f"{_unit_link(child['id'])}<br>label <b>{html.escape(child['label'])}</b>, "
                f"purity {_number(child['purity'])}, {child['references']} references"
                + _strip(child, plan, ROWS.index("crop"), config, limit=VIRTUAL_CROPS)
                + "</div>"
                for child in members
            )
            parts.append(f"<h3>{html.escape(group)}</h3><div class='virtuals'>{blocks}</div>")
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [
            f"<figure><img src='../{html.escape(path)}' alt='{html.escape(title)}'>"
            f"<figcaption>{html.escape(title)}</figcaption></figure>"
            for title, path in figures
        ]
    if record["similar"]:
        links = "".join(
            f"<li>{_unit_link(unit_id)} (cosine {score:.3f})</li>"
            for unit_id, score in record["similar"]
        )
        parts.append(f"<h2>Most similar units (other neurons and features)</h2><ul>{links}</ul>")
    return _page(f"{record['id']} · {experiment}", "\n".join(parts), depth=1)


def index_page(records: Sequence[Mapping], experiment: str, metadata: Mapping) -> str:
    """The HTML of ``index.html``: every unit in a sortable, filterable table."""
    rows = [
        {key: record.get(key) for key in SORTABLE if key not in ("unit", "score")}
        | {
            # A (virtual) neuron's channel, an SAE feature's or a dimension's index.
            "unit": next(
                (
                    record.get(key)
                    for key in ("neuron", "feature", "dimension")
                    if record.get(key) is not None
                ),
                None,
            ),
            "score": record["labels"][0][1],
        }
        for record in records
    ]
    kinds = list(dict.fromkeys(record["kind"] for record in records))
    options = "".join(f"<option value='{html.escape(k)}'>{html.escape(k)}</option>" for k in kinds)
    headers = "".join(f"<th data-key='{key}'>{key}</th>" for key in SORTABLE)
    vocabulary = metadata.get("vocabulary", {})
    # </script> inside the data would end the element: escape '<' in the JSON.
    data = json.dumps(rows).replace("<", "\\u003c")
    body = f"""
<h1>Unit atlas: {html.escape(experiment)}</h1>
<p>{len(records)} units. Labels: the nearest of {vocabulary.get("entries", "?")} vocabulary entries
({html.escape(str(vocabulary.get("source", "?")))}) in the {html.escape(str(metadata.get("space")))}
embedder's space; score: its cosine similarity. Click a column to sort.</p>
<div class="controls"><input id="search" type="search" placeholder="filter: label, id, kind">
<select id="kind"><option value="">all kinds</option>{options}</select>
<span id="count"></span></div>
<table id="units" class="units"><thead><tr>{headers}</tr></thead><tbody></tbody></table>
<script type="application/json" id="units-data">{data}</script>
<script type="application/json" id="columns-data">{json.dumps(list(SORTABLE))}</script>
<script>{_INDEX_SCRIPT}</script>
"""
    return _page(f"Unit atlas · {experiment}", body, depth=0)


def write_site(
    directory: str | os.PathLike,
    catalogue: Mapping,
    sprites: Mapping[str, np.ndarray],
    plans: Mapping[str, SpritePlan],
    figures: Mapping[str, Sequence[tuple[str, str | os.PathLike]]],
    config: AtlasConfig,
) -> Path:
    """Write the whole site into ``directory`` (created, or replaced atomically).

    ``sprites`` maps a family's base id to its sprite (:func:`sprite_array`); ``figures``
    maps a unit id to ``(title, source file)`` pairs, copied under ``figures/``. The site
    is built in a sibling directory and renamed into place, so an interrupted job never
    leaves a partial atlas. Returns the path of ``index.html``.
    """
    from PIL import Image

    directory = Path(directory)
    records = catalogue["units"]
    experiment = catalogue.get("experiment", "")
    building = directory.with_name(directory.name + ".building")
    if building.exists():
        shutil.rmtree(building)
    (building / "units").mkdir(parents=True)
    (building / "img").mkdir()
    (building / "atlas.css").write_text(_STYLE, encoding="utf-8")
    for base, sprite in sprites.items():
        Image.fromarray(sprite).save(
            building / "img" / f"{base}.{SPRITE_FORMAT}", quality=SPRITE_QUALITY, optimize=True
        )
    copied: dict[str, str] = {}
    page_figures: dict[str, list[tuple[str, str]]] = {}
    for unit_id, entries in figures.items():
        for title, source in entries:
            source = Path(source)
            if str(source) not in copied:
                target = Path("figures") / f"{len(copied):03d}_{source.name}"
                (building / target).parent.mkdir(exist_ok=True)
                shutil.copyfile(source, building / target)
                copied[str(source)] = target.as_posix()
            page_figures.setdefault(unit_id, []).append((title, copied[str(source)]))
    children: dict[str, list[Mapping]] = {}
    for record in records:
        if record["base"] != record["id"]:
            children.setdefault(record["base"], []).append(record)
    for record in records:
        page = unit_page(
            record,
            plans,
            children.get(record["id"], []),
            page_figures.get(record["id"], []),
            config,
            experiment,
        )
        (building / "units" / f"{record['id']}.html").write_text(page, encoding="utf-8")
    (building / "index.html").write_text(
        index_page(records, experiment, catalogue), encoding="utf-8"
    )
    if directory.exists():
        shutil.rmtree(directory)
    building.rename(directory)
    return directory / "index.html"


def site_size(directory: str | os.PathLike) -> tuple[int, int]:
    """``(files, bytes)`` of a written atlas."""
    files = [path for path in Path(directory).rglob("*") if path.is_file()]
    return len(files), sum(path.stat().st_size for path in files)


def write_size_table(directory: str | os.PathLike, stem: str | os.PathLike, experiment: str):
    """The atlas's size as a table (CSV, Markdown, LaTeX at ``stem``): units, files per
    part and megabytes, so that the README quotes the run instead of a typed number."""
    import pandas as pd

    from monoscope.tables import write_table

    directory = Path(directory)
    parts = {"unit pages": "units", "sprites": "img", "figures": "figures"}
    row = {}
    for title, folder in parts.items():
        row[title] = site_size(directory / folder)[0] if (directory / folder).exists() else 0
    files, size = site_size(directory)
    row |= {"files": files, "MB": round(size / 1e6, 2)}
    frame = pd.DataFrame([row], index=pd.Index([experiment], name="atlas"))
    return write_table(
        frame,
        stem,
        f"{experiment}: the unit atlas (atlas/index.html): one page per unit, one JPEG sprite "
        "of reference images, crops and heatmaps per neuron or SAE feature, the workflow's "
        "figures of the figure neurons; all files and their total size.",
        label="tab:atlas",
    )
