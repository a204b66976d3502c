"""``python -m monoscope.hierarchy build-imagenet``: regenerate the committed tree table."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from monoscope.hierarchy.wordnet import TREE_RESOURCE, build_imagenet_tree_table, parse_tree_table


def _default_tree_path() -> Path:
    return Path(__file__).resolve().parents[1] / "resources" / TREE_RESOURCE


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m monoscope.hierarchy build-imagenet [--wordnet-dir DIR] [--out FILE]``."""
    parser = argparse.ArgumentParser(
        prog="python -m monoscope.hierarchy",
        description="Regenerate the ImageNet WordNet tree table.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build-imagenet", help="write the ImageNet WordNet tree table")
    build.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"))
    build.add_argument("--out", type=Path, default=_default_tree_path())
    args = parser.parse_args(argv)
    text = build_imagenet_tree_table(args.wordnet_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # newline="\n": the file must be byte-identical on every platform.
    with open(args.out, "w", encoding="utf-8", newline="\n") as out:
        out.write(text)
    _, lemmas = parse_tree_table(text)
    print(f"wrote {len(lemmas)} synsets to {args.out}")


if __name__ == "__main__":
    main()
