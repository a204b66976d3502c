"""The unit atlas (monoscope.atlas), unit search (monoscope.search, `monoscope search`),
and the atlas in a real browser: headless Chromium loads the index and a unit page and
the test reads the DOM (skipped, with the reason, where Chromium is not installed)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import check_atlas_in_browser, needs_chromium
from PIL import Image
from test_catalogue import CLASSES, catalogue

from monoscope.atlas import (
    ROWS,
    AtlasConfig,
    heatmap_colours,
    overlay,
    plan_sprites,
    site_size,
    sprite_array,
    write_site,
)
from monoscope.catalogue import save_catalogue
from monoscope.cli import main as cli
from monoscope.search import UnitIndex, nearest_units
from monoscope.vocabulary import Vocabulary, save_vocabulary

REPO = Path(__file__).resolve().parents[1]


def test_sprite_plans_hold_the_shown_references_of_a_family():
    records = [
        {"id": "n", "base": "n", "slots": [0, 1, 2, 3, 4]},
        {"id": "v0", "base": "n", "slots": [1, 3]},
        {"id": "v1", "base": "n", "slots": [0, 2, 4]},
        {"id": "f", "base": "f", "slots": [0, 1, 2]},
    ]
    plans = plan_sprites(records, AtlasConfig(references=2, heatmaps=1))
    assert plans["n"].slots == [0, 1, 2, 3]  # n: 0, 1; v0: 1, 3; v1: 0, 2
    assert plans["n"].heatmap_slots == [0, 1]
    assert plans["f"].slots == [0, 1] and plans["n"].column(3) == 3
    plans = plan_sprites(records, AtlasConfig(references=2, heatmaps=2))
    assert plans["n"].heatmap_slots == [0, 1, 2, 3]  # every unit's first two


def test_heatmap_colours_and_overlay():
    colours = heatmap_colours(np.array([[2.0, -2.0, 0.0, 1.0]]))
    assert colours[0].tolist() == [[255, 0, 0], [0, 0, 255], [255, 255, 255], [255, 128, 128]]
    assert heatmap_colours(np.zeros((1, 1)))[0, 0].tolist() == [255, 255, 255]
    image = np.array([[[30, 60, 90]]], dtype=np.uint8)  # grey 60
    mixed = overlay(image, np.array([[[255, 0, 0]]], dtype=np.uint8), alpha=0.5)
    assert mixed[0, 0].tolist() == [158, 30, 30]


def test_sprite_rows_are_image_crop_heatmap():
    size = 2
    images = np.full((3, size, size, 3), 10, dtype=np.uint8)
    crops = np.full((3, size, size, 3), 20, dtype=np.uint8)
    heat = {1: np.full((size, size, 3), 30, dtype=np.uint8)}
    sprite = sprite_array(images, crops, heat, size)
    assert sprite.shape == (len(ROWS) * size, 3 * size, 3)
    assert (sprite[:size] == 10).all() and (sprite[size : 2 * size] == 20).all()
    assert (sprite[2 * size :, size : 2 * size] == 30).all()
    assert (sprite[2 * size :, :size] == 255).all()  # no heatmap: white
    assert sprite_array(images, None, {}, size).shape == (size, 3 * size, 3)  # images only


SMALL_ATLAS = AtlasConfig(thumbnail=8, references=3, heatmaps=2)


def build_site(directory: Path, config: AtlasConfig = SMALL_ATLAS):
    """A site of test_catalogue's hand-built experiment, with a figure on neuron 3."""
    records, directions, _, _ = catalogue()
    plans = plan_sprites(records, config)
    generator = np.random.default_rng(0)
    size = config.thumbnail
    sprites = {}
    for base, plan in plans.items():
        columns = len(plan.slots)
        images = generator.integers(0, 255, (columns, size, size, 3), dtype=np.uint8)
        heat = {
            plan.column(s): heatmap_colours(generator.normal(size=(size, size)))
            for s in plan.heatmap_slots
        }
        sprites[base] = sprite_array(images, images[:, ::-1].copy(), heat, size)
    directory.parent.mkdir(parents=True, exist_ok=True)
    figure = directory.parent / "umap.png"
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(figure)
    metadata = {
        "experiment": "hand",
        "space": "judge",
        "vocabulary": {"source": "prototypes", "entries": 3},
    }
    index = write_site(
        directory,
        metadata | {"units": records},
        sprites,
        plans,
        {"neurons-layer4-3": [("circuit UMAP", figure)]},
        config,
    )
    return index, records, directions, metadata


def test_the_site_has_every_unit_and_links_families(tmp_path):
    index, records, _, _ = build_site(tmp_path / "atlas")
    text = index.read_text()
    data = json.loads(re.search(r'id="units-data">(.*?)</script>', text).group(1))
    assert [row["id"] for row in data] == [r["id"] for r in records]
    pages = sorted(path.stem for path in (tmp_path / "atlas" / "units").glob("*.html"))
    assert pages == sorted(r["id"] for r in records)
    neuron = (tmp_path / "atlas" / "units" / "neurons-layer4-3.html").read_text()
    assert "pure-k2-layer4-3-0.html" in neuron and "pure-k2-layer4-3-1.html" in neuron
    assert "img/neurons-layer4-3.jpg" in neuron and "circuit UMAP" in neuron
    virtual = (tmp_path / "atlas" / "units" / "pure-k2-layer4-3-1.html").read_text()
    assert "a virtual neuron of <a href='neurons-layer4-3.html'>" in virtual
    for record in records:  # every image a page names exists
        page = (tmp_path / "atlas" / "units" / f"{record['id']}.html").read_text()
        for source in re.findall(r"src='\.\./([^']+)'", page):
            assert (tmp_path / "atlas" / source).is_file(), (record["id"], source)
    files, size = site_size(tmp_path / "atlas")
    assert files == len(records) + 2 + len(plan_sprites(records, AtlasConfig())) + 1


def test_rebuilding_replaces_the_site_and_leaves_no_partial_directory(tmp_path):
    build_site(tmp_path / "atlas")
    (tmp_path / "atlas" / "stale.html").write_text("old")
    build_site(tmp_path / "atlas")
    assert not (tmp_path / "atlas" / "stale.html").exists()
    assert not (tmp_path / "atlas.building").exists()


def test_nearest_units_against_brute_force():
    generator = torch.Generator().manual_seed(1)
    directions, query = torch.randn(7, 3, generator=generator), torch.randn(3, generator=generator)
    order, scores = nearest_units(directions, query, top=3)
    cosines = [float(torch.nn.functional.cosine_similarity(d, query, dim=0)) for d in directions]
    assert order.tolist() == sorted(range(7), key=lambda i: -cosines[i])[:3]
    assert scores.tolist() == pytest.approx(sorted(cosines, reverse=True)[:3])


def results_folder(tmp_path):
    """An experiment's results folder with the catalogue, directions, vocabulary and atlas."""
    results = tmp_path / "results" / "hand"
    _, records, directions, metadata = build_site(results / "atlas")
    save_catalogue(
        results / "evaluation" / "catalogue.json",
        results / "evaluation" / "directions.safetensors",
        records,
        directions,
        metadata,
    )
    vocabulary = Vocabulary(torch.eye(3), list(CLASSES), "prototypes")
    save_vocabulary(results / "labels" / "judge.safetensors", vocabulary, {"embedder": "judge"})
    return results


def test_search_by_class_finds_the_units_of_that_class(tmp_path):
    index = UnitIndex(results_folder(tmp_path))
    matches = index.search(index.class_query("one"), top=2)
    assert matches[0].id == "sae-l1-layer4-7"  # every reference of feature 7 is a one
    assert matches[0].score == pytest.approx(1.0)
    assert matches[0].page.is_file()
    with pytest.raises(ValueError, match="not in the label vocabulary"):
        index.class_query("seven")


def test_search_command(tmp_path, capsys):
    results = results_folder(tmp_path)
    assert cli(["search", "--class", "two", "--results", str(results), "--top", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 3 and rows[0]["label"] == "two" and rows[0]["page"].endswith(".html")
    assert cli(["search", "--class", "two", "--results", str(tmp_path / "none")]) == 2
    assert "run the workflow's evaluation first" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["search", "--results", str(results)])  # no query at all


@needs_chromium
def test_the_atlas_in_a_browser(tmp_path):
    index, records, _, _ = build_site(tmp_path / "atlas")
    check_atlas_in_browser(index, records, REPO / "results" / "browser-test" / "hand")
