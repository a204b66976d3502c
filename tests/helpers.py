"""Helpers shared by several test modules (imported as ``from helpers import ...``)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monoscope import checkpoints

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def open_png(path) -> np.ndarray:
    """The RGB pixels of a PNG file, checking that it is one."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        return np.asarray(image.convert("RGB"))


def interrupted_after_first_epoch(monkeypatch, run):
    """Call ``run`` with the job killed right after its first checkpoint is written."""
    real_save = checkpoints.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # the job is killed right after the first epoch

    monkeypatch.setattr(checkpoints, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(checkpoints, "save_checkpoint", real_save)


def layer_output(model, images, layer) -> torch.Tensor:
    """The output of ``model``'s ``layer`` on ``images``, from a plain forward hook."""
    captured = {}
    handle = model.layer(layer).register_forward_hook(
        lambda _module, _inputs, output: captured.__setitem__("out", output.detach())
    )
    try:
        with torch.no_grad():
            model.net(model.normalize(images))
    finally:
        handle.remove()
    return captured["out"]


# --------------------------------------------------------------------------- Snakemake


def snakemake(workdir, *args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake run or dry run."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats"))
    counts = {}
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


# --------------------------------------------------------------------------- browser


def chromium() -> str | None:
    """The headless browser of the atlas tests (Debian's chromium), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def browse(page, dump_dom: bool = True, screenshot=None, size=(1300, 900)) -> str:
    """Load ``page`` (a path, with an optional ``?query``) in headless Chromium after its
    scripts and images have run and loaded; returns the DOM, or saves a screenshot."""
    browser = chromium()
    if browser is None:
        raise RuntimeError("no chromium")
    path, _, query = str(page).partition("?")
    url = Path(path).resolve().as_uri() + (f"?{query}" if query else "")
    command = [
        browser,
        "--headless",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--hide-scrollbars",
        "--allow-file-access-from-files",
        "--virtual-time-budget=5000",
        f"--window-size={size[0]},{size[1]}",
    ]
    command += ["--dump-dom"] if dump_dom and screenshot is None else [f"--screenshot={screenshot}"]
    result = subprocess.run(command + [url], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"chromium failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


needs_chromium = pytest.mark.skipif(
    chromium() is None,
    reason="Chromium is not installed (Debian package chromium; `make test` installs it "
    "where it can: tests/install-chromium.sh)",
)


def check_atlas_in_browser(index: Path, records, screenshots: Path, thorough: bool = True) -> None:
    """The checks of the browser test, on any atlas: the index lists every unit and
    filters by kind (``thorough``: and by text, from the full table); a neuron page shows
    its labels, links its virtual neurons, and all its images load. Screenshots of both
    go to ``screenshots``. Each page load starts Chromium (seconds): few loads."""
    kind = records[1]["kind"]  # a clustering method: the virtual neurons
    expected = sum(record["kind"] == kind for record in records)
    dom = browse(f"{index}?kind={kind}")
    assert f'data-visible="{expected}"' in dom and f"{expected} of {len(records)} units" in dom
    rows = re.findall(r'<tr data-kind="([^"]+)"><td', dom)  # the rendered rows, not the script
    assert rows == [kind] * expected
    if thorough:
        dom = browse(index)
        assert f'data-visible="{len(records)}"' in dom
        rows = re.findall(r'<tr data-kind="([^"]+)"><td', dom)
        assert sorted(rows) == sorted(record["kind"] for record in records)
        assert 'data-visible="1"' in browse(f"{index}?q={records[1]['id']}")
    neuron = next(record for record in records if record["kind"] == "neurons")
    page = index.parent / "units" / f"{neuron['id']}.html"
    dom = browse(page)
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    failed = re.search(r'data-images-failed="(\d+)"', dom)
    assert loaded and int(loaded.group(1)) >= 1 and failed and failed.group(1) == "0", dom[-2000:]
    children = [r for r in records if r["base"] == neuron["id"] and r["id"] != neuron["id"]]
    assert children and all(f"{child['id']}.html" in dom for child in children)
    assert f"<b>{neuron['label']}</b>" in dom
    assert all(f"label <b>{child['label']}</b>" in dom for child in children)
    screenshots.mkdir(parents=True, exist_ok=True)
    browse(f"{index}?sort=purity&order=desc", screenshot=screenshots / "index.png")
    browse(page, screenshot=screenshots / "neuron.png", size=(1300, 1600))
    for shot in ("index.png", "neuron.png"):
        with Image.open(screenshots / shot) as image:
            assert image.size[0] == 1300 and len(np.unique(np.asarray(image.convert("L")))) > 2


def report_html(report_zip) -> str:
    """The ``report.html`` inside a Snakemake zip report (``--report <name>.zip``)."""
    import zipfile

    with zipfile.ZipFile(report_zip) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/report.html"))
        return archive.read(name).decode(errors="replace")
