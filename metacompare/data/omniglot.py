"""Omniglot (Lake et al. 2015) from its official zips or their unpacked folders (``dataset: omniglot``):
split by alphabet or by character, as the config chooses, optionally with rotated classes."""

from __future__ import annotations

import fnmatch
import functools
import io
import os
import random
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metacompare import paths
from metacompare.data.labelled import Labelled
from metacompare.data.source import DataSource, register
from metacompare.errors import DataError
from metacompare.config.runconfig import RunConfig

OMNIGLOT_SOURCES = ("images_background", "images_evaluation",
                    "images_background_small1", "images_background_small2")


def omniglot_help(root: Path, source: str) -> str:
    return (f"get it with `python -m metacompare download omniglot --root {root} --sources {source}` "
            f"or set data_root to the folder that holds the zips")


def _source_entries(root: Path, source: str) -> list[tuple[str, str, bytes]]:
    """(alphabet, character, png bytes) for every image of one official zip or its unpacked folder."""
    folder, archive = root / source, root / f"{source}.zip"
    entries = []
    if folder.is_dir():
        for png in sorted(folder.glob("*/*/*.png")):
            with paths.open_data(png, f"replace it with the image; {omniglot_help(root, source)}") as handle:
                entries.append((png.parent.parent.name, png.parent.name, handle.read()))
    elif os.path.lexists(archive):
        handle = paths.open_data(archive, f"delete it and {omniglot_help(root, source)}")
        try:
            with handle, zipfile.ZipFile(handle) as zf:
                for name in sorted(zf.namelist()):
                    parts = name.split("/")
                    if len(parts) == 4 and parts[3].endswith(".png"):
                        entries.append((parts[1], parts[2], zf.read(name)))
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
            raise DataError(f"{archive}: corrupt or truncated zip ({err}); delete it and "
                            f"{omniglot_help(root, source)}") from None
    else:
        raise DataError(f"omniglot source '{source}' not found: looked for {archive} and {folder}/; "
                        f"{omniglot_help(root, source)}")
    if not entries:
        raise DataError(f"{folder if folder.is_dir() else archive}: holds no images laid out as "
                        f"<source>/<Alphabet>/<character>/<drawer>.png; {omniglot_help(root, source)}")
    return entries


@functools.lru_cache(maxsize=4)
def load_omniglot(root: str, sources: tuple[str, ...], image_size: int) -> dict[tuple[str, str, str], torch.Tensor]:
    """Every character of the given sources as a ``[drawers, 1, S, S]`` float tensor, ink = 1.

    Keys are ``(source, alphabet, character)``; a character that appears in two sources (Greek and
    Latin are in both minimal splits) is kept once, under the first source.
    """
    characters: dict[tuple[str, str, str], list[torch.Tensor]] = {}
    seen: set[tuple[str, str]] = set()
    for source in sources:
        taken = set()
        for alphabet, character, png in _source_entries(Path(root), source):
            if (alphabet, character) in seen:
                continue
            taken.add((alphabet, character))
            try:
                image = Image.open(io.BytesIO(png)).convert("L").resize((image_size, image_size), Image.LANCZOS)
            except OSError as err:
                raise DataError(f"{root}/{source}: unreadable image in {alphabet}/{character} ({err}); "
                                f"re-download the data") from None
            pixels = 1.0 - torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
            characters.setdefault((source, alphabet, character), []).append(pixels[None])
        seen |= taken
    return {key: torch.stack(images) for key, images in characters.items()}


def select_alphabets(selectors: tuple[str, ...], available: set[tuple[str, str]], field: str) -> set[tuple[str, str]]:
    """Resolve ``Alphabet``, ``source/Alphabet`` or ``source/*`` selectors to (source, alphabet) pairs."""
    chosen = set()
    for selector in selectors:
        source, _, alphabet = selector.rpartition("/")
        hits = {(s, a) for s, a in available
                if fnmatch.fnmatchcase(a, alphabet) and (not source or fnmatch.fnmatchcase(s, source))}
        if not hits:
            names = sorted({a for _, a in available})
            raise DataError(f"omniglot.{field}: '{selector}' matches no alphabet of the configured sources; "
                            f"available: {', '.join(names)}")
        chosen |= hits
    return chosen


class OmniglotCharacters(Labelled):
    """Images of chosen characters; with ``rotations`` each 90/180/270-degree turn is a new class."""

    def __init__(self, characters: list[torch.Tensor], rotations: bool):
        images, labels = [], []
        turns = range(4) if rotations else range(1)
        for index, drawings in enumerate(characters):
            for k in turns:
                images.append(torch.rot90(drawings, k, dims=(2, 3)))
                labels.extend([index * len(turns) + k] * len(drawings))
        super().__init__(labels)
        self.images = torch.cat(images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], self.labels[index]


def omniglot_splits(cfg: RunConfig) -> dict[str, OmniglotCharacters]:
    """Train / validation / test datasets, split by alphabet or by character as the config chooses."""
    oc = cfg.omniglot
    root = Path(cfg.data_root)
    if paths.dangling(root):
        raise DataError(f"data_root: {root} {paths.dangling(root)}; {omniglot_help(root, ' '.join(oc.sources))}")
    for source in oc.sources:
        if source not in OMNIGLOT_SOURCES:
            raise DataError(f"omniglot.sources: unknown source '{source}'; choose from {', '.join(OMNIGLOT_SOURCES)}")
    missing = [s for s in oc.sources if not (root / s).is_dir() and not (root / f"{s}.zip").is_file()]
    if missing and oc.download and set(missing) <= {"images_background", "images_evaluation"}:
        from metacompare.data.download import download_omniglot

        download_omniglot(root, missing)
    characters = load_omniglot(str(root), tuple(oc.sources), oc.image_size)
    keys = _character_split(characters, oc) if oc.split == "characters" else _alphabet_split(characters, oc)
    splits = {}
    for name, chosen in keys.items():
        if not chosen:
            raise DataError(f"omniglot: the {name} split holds no characters; list alphabets in "
                            f"omniglot.{name}_alphabets or change the character counts")
        rotated = name in oc.rotated_splits and oc.rotations and oc.rotation == "classes"
        splits[name] = OmniglotCharacters([characters[key] for key in chosen], rotated)
    return splits


def _character_split(characters: dict, oc) -> dict[str, list]:
    """Nichol et al. and Finn et al.: all characters shuffled with a fixed seed, then cut by count."""
    keys = sorted(characters)
    random.Random(oc.split_seed).shuffle(keys)
    train_end = oc.train_characters
    validation_end = train_end + oc.validation_characters
    if validation_end >= len(keys):
        raise DataError(f"omniglot: train_characters + validation_characters = {validation_end} leaves no "
                        f"test characters out of the {len(keys)} of the configured sources; lower them")
    train, test = keys[:train_end], keys[validation_end:]
    # No validation characters (supervised-reptile has none): validate on fresh training tasks.
    validation = keys[train_end:validation_end] or train
    return {"train": train, "validation": validation, "test": test}


def _alphabet_split(characters: dict, oc) -> dict[str, list]:
    """Alphabet-disjoint splits from the configured alphabet lists."""
    available = {(s, a) for s, a, _ in characters}
    test = select_alphabets(oc.test_alphabets, available, "test_alphabets")
    validation = select_alphabets(oc.validation_alphabets, available, "validation_alphabets")
    if oc.train_alphabets is None:
        train = available - test - validation
    else:
        train = select_alphabets(oc.train_alphabets, available, "train_alphabets")
    for name, a, b in (("train and test", train, test), ("train and validation", train, validation),
                       ("validation and test", validation, test)):
        shared = {alpha for _, alpha in a} & {alpha for _, alpha in b}
        if shared:
            raise DataError(f"omniglot: the {name} splits share alphabets {sorted(shared)}; "
                            f"make the alphabet lists disjoint")
    return {name: [key for key in sorted(characters) if key[:2] in chosen]
            for name, chosen in (("train", train), ("validation", validation), ("test", test))}




class Omniglot(DataSource):
    """Grey ``omniglot.image_size`` images; classes may be rotated copies or turned per task."""

    name = "omniglot"
    size_field = "omniglot.image_size"
    section = "omniglot"

    def splits(self, cfg: RunConfig) -> tuple[dict[str, OmniglotCharacters], None]:
        return omniglot_splits(cfg), None

    def input_shape(self, cfg: RunConfig, channels: int | None = None) -> tuple[int, ...]:
        return 1, cfg.omniglot.image_size, cfg.omniglot.image_size

    def rotated(self, cfg: RunConfig, split: str) -> bool:
        oc = cfg.omniglot
        return oc.rotations and oc.rotation == "per_task" and split in oc.rotated_splits


register(Omniglot())
