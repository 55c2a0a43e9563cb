"""Query the live release from the command line: `python -m ui.search IMAGE... [--k K]`, or
`python -m ui.search --item ID` for more like a catalogue item.

Prints one JSON object per image (or item): the release id and the k nearest items (item id, label,
label name, distance, path, metadata when the dataset has it). Images of any size and mode are
normalised by storage.images.normalise_image, the same function the page, the service and the drop
folder use. A neighbour's `path` names the item in its dataset ("fashion-mnist/train/57608"), which
is not always a file: `--save DIR` writes each neighbour's picture, and the picture searched, as files
(DIR/image-<n>/ for the n-th image given, DIR/item-<id>/ for --item) and adds their paths.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from storage.errors import UserError
from storage.files import escape_name
from storage.home import DataHome
from storage.images import ImageRejected, encode_png, normalise_file
from storage.match_score import match_fields
from storage.releases import Release, load_release
from storage.runtime import add_verbose_flag, parse_command_line

PICTURE_SUFFIX = {"jpeg": "jpg", "png": "png"}


def save_pictures(release: Release, result: dict, folder: Path, searched: bytes) -> None:
    """Write the picture that was searched (`searched`, a PNG) and each neighbour's picture into
    `folder`, and add their paths to `result` ("query_file", and "file" in each neighbour)."""
    folder.mkdir(parents=True, exist_ok=True)
    query_file = folder / "query.png"
    query_file.write_bytes(searched)
    result["query_file"] = str(query_file)
    for neighbour in result["neighbours"]:
        data, kind = release.picture_file(release.row_of(neighbour["item_id"]))
        path = folder / f"{neighbour['rank']:02d}-item-{neighbour['item_id']}.{PICTURE_SUFFIX[kind]}"
        path.write_bytes(data)
        neighbour["file"] = str(path)


def search_files(release: Release, paths: list[Path], k: int, save: Path | None = None) -> list[dict]:
    """One result per file: neighbours, or the reason the file could not be searched. With `save`, the
    normalised image and its neighbours' pictures are written under save/image-<n> (save_pictures)."""
    results, accepted, pixels = [], [], []
    for path in paths:
        shown = escape_name(str(path))
        try:
            image = normalise_file(path, release.dataset)
        except ImageRejected as error:  # the file's own answer; the other files are still searched
            results.append({"image": shown, "release_id": release.release_id, "error": str(error)})
            continue
        accepted.append(len(results))
        pixels.append(image.pixels)
        results.append({"image": shown, "release_id": release.release_id})
    if pixels:
        import numpy as np

        images = np.stack(pixels)
        embeddings = release.embed(images)
        for position, image, embedding, neighbours in zip(accepted, images, embeddings,
                                                          release.neighbours(embeddings, k)):
            results[position]["neighbours"] = [n.as_dict() for n in neighbours]
            results[position].update(match_fields(release.match_band(image, embedding, neighbours)))
            if save is not None:
                save_pictures(release, results[position], save / f"image-{position + 1}", encode_png(image))
    return results


def similar_items(release: Release, item_ids: list[int], k: int, save: Path | None = None) -> list[dict]:
    """One result per catalogue item: the k items most like it (itself left out), or why not. With
    `save`, its picture and its neighbours' are written under save/item-<id> (save_pictures)."""
    results = []
    for item_id in item_ids:
        try:
            row = release.row_of(item_id)
        except KeyError:
            results.append({"item": item_id, "release_id": release.release_id,
                            "error": f"no item {item_id} in release {release.release_id}"})
            continue
        neighbours = release.similar(item_id, k)[0]
        band = release.match_band(release.items.images[row], release.embeddings[row], neighbours)
        results.append({"item": item_id, "release_id": release.release_id,
                        "neighbours": [n.as_dict() for n in neighbours], **match_fields(band)})
        if save is not None:
            save_pictures(release, results[-1], save / f"item-{item_id}", encode_png(release.items.images[row]))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ui.search", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", type=Path, help="PNG or JPEG files to search with")
    parser.add_argument("--item", type=int, action="append", default=[],
                        help="a catalogue item id: search for more like it (repeatable)")
    parser.add_argument("--k", type=int, default=10, help="neighbours per image (default 10)")
    parser.add_argument("--data-home", default="", help="data home (default $FASHION_SIM_HOME, else ./data)")
    parser.add_argument("--save", type=Path, metavar="DIR",
                        help="write the searched pictures and their neighbours' as image files under DIR")
    add_verbose_flag(parser)
    args = parse_command_line(parser, argv)
    if args.k < 1:
        parser.error("--k must be at least 1")
    if not args.images and not args.item:
        parser.error("give image files to search with, or --item ID")
    try:
        release = load_release(DataHome.from_env(args.data_home or None))
        results = (search_files(release, args.images, args.k, args.save)
                   + similar_items(release, args.item, args.k, args.save))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # --save DIR: not writable, full disk
        print(f"error: cannot write the pictures to {args.save}: {error.strerror or error}", file=sys.stderr)
        return 2
    for result in results:
        print(json.dumps(result))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
