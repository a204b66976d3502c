"""The ``monoscope`` command.

monoscope search "striped fur"            # text (open_clip with projected pooling)
monoscope search --class 7                # a class of the label vocabulary
monoscope search --image photo.jpg        # an image, through the same embedder
monoscope search --class 7 --results results/real_photos --top 20 --json
monoscope warm-caches                     # compile numba kernels once (make install does)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from monoscope.search import UnitIndex


def _search(arguments: argparse.Namespace) -> int:
    given = [arguments.text is not None, arguments.image is not None, arguments.cls is not None]
    if sum(given) != 1:
        raise SystemExit("monoscope search: give exactly one of TEXT, --image or --class")
    index = UnitIndex(arguments.results)
    if arguments.text is not None:
        query = index.text_query(arguments.text)
    elif arguments.image is not None:
        query = index.image_query(arguments.image)
    else:
        query = index.class_query(arguments.cls)
    matches = index.search(query, arguments.top)
    if arguments.json:
        rows = [
            {
                "id": m.id,
                "kind": m.kind,
                "label": m.label,
                "score": round(m.score, 4),
                "page": str(m.page),
            }
            for m in matches
        ]
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    width = max(len(m.id) for m in matches)
    print(f"{'rank':>4}  {'unit':<{width}}  {'kind':<14} {'label':<16} {'cosine':>7}  page")
    for rank, m in enumerate(matches, 1):
        print(
            f"{rank:>4}  {m.id:<{width}}  {m.kind:<14} {m.label[:16]:<16} {m.score:>7.3f}  {m.page}"
        )
    return 0


def _warm_caches(arguments: argparse.Namespace) -> int:
    """Run the numba-compiled code paths once, so numba's disk cache holds their kernels."""
    import time

    import numpy as np
    import torch

    from monoscope.plotting import circuit_umap_points
    from monoscope.pure.metrics import _correlations

    start = time.perf_counter()
    values = np.random.default_rng(0).normal(size=64)
    _correlations(values, values**2)  # dcor's kernels (compat adapter 5)
    circuit_umap_points(torch.randn(40, 16, generator=torch.Generator().manual_seed(0)))
    print(
        f"monoscope warm-caches: dcor and UMAP kernels cached ({time.perf_counter() - start:.1f} s)"
    )
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="monoscope", description=__doc__.split("\n")[0])
    commands = main.add_subparsers(dest="command", required=True)
    search = commands.add_parser(
        "search",
        help="units of every kind nearest to a text, image or class",
        description="The units nearest (cosine, in the catalogue's embedder space) to a "
        "query, across neurons, virtual neurons and SAE features, with their atlas pages.",
    )
    search.add_argument("text", nargs="?", help="a text query (needs a text tower)")
    search.add_argument("--image", help="an image file as the query")
    search.add_argument("--class", dest="cls", help="a class (vocabulary entry) as the query")
    search.add_argument(
        "--results", default="results/demo", help="an experiment's results folder (results/demo)"
    )
    search.add_argument("--top", type=int, default=10, help="units to list (10)")
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")
    search.set_defaults(run=_search)
    warm = commands.add_parser(
        "warm-caches",
        help="compile dcor's and umap-learn's numba kernels into numba's disk cache",
        description="Runs the code paths that numba compiles (distance correlation, the "
        "circuit UMAP) once, so that no later job pays for compiling them (make install "
        "runs it; without it, a machine's first evaluation and UMAP jobs compile).",
    )
    warm.set_defaults(run=_warm_caches)
    return main


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    try:
        return arguments.run(arguments)
    except (FileNotFoundError, ValueError) as error:
        print(f"monoscope {arguments.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
