"""``metacompare inspect PATH``: what a folder or table holds, the split it would get, the tasks it serves.

Reads the index (no image is decoded; a few files' headers give the image sizes and whether they are
grey), so it is as quick on 100,000 files as indexing them; ``verify`` decodes every image to find
the corrupt ones. Anything a run could not use is a DataError (exit status 2, one line).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from metacompare.data import folder as images
from metacompare.data import splits
from metacompare.data.defaults import _fractions, base_config
from metacompare.data.user import PROBE_FILES, image_shape, load_source
from metacompare.errors import DataError

QUERIES = (1, 5, 15)


def inspect(path: str | Path, form: str | None = None, label_column: str = "label", text_column: str = "text",
            ways: int = 5, shots: int = 1, query: int = 1, verify: bool = False, overrides=()) -> str:
    """The report as text; raises DataError where the data cannot serve ``ways``-way ``shots``-shot tasks."""
    from metacompare.config import expand

    raw = base_config(path, form, label_column, text_column)
    raw["model"] = {"folder": "conv4_finn", "table": "metamodel", "text": "bag_of_embeddings"}[raw["dataset"]]
    cfg = expand({**raw, "ways": ways, "shots": shots, "query": query, "test_query": query}, overrides, source="inspect")[0]
    source = load_source(cfg)
    if not any(o.split("=")[0].strip() in ("user_data.validation_fraction", "user_data.test_fraction")
               for o in overrides):
        validation, test = _fractions(source, ways)
        cfg = expand({**raw, "ways": ways, "shots": shots, "query": query, "test_query": query,
                      "user_data": {**raw["user_data"], "validation_fraction": validation, "test_fraction": test}},
                     overrides, source="inspect")[0]
    counts = source.per_class
    groups = sorted(set(source.groups) - {""})
    lines = [f"{source.path}: {source.form}" + (" (two levels: group/class)" if groups else ""),
             f"  classes: {len(source.classes)}" + (f" in {len(groups)} groups" if groups else "")
             + f"; {len(source.labels)} examples",
             f"  examples per class: min {min(counts)}, median {statistics.median(counts):g}, max {max(counts)}"
             + f" (smallest: '{source.classes[counts.index(min(counts))]}')"]
    lines += _shape_lines(cfg, source, verify)
    split = splits.split_classes(source.classes, source.groups, cfg.user_data.validation_fraction,
                                 cfg.user_data.test_fraction, cfg.user_data.split_seed)
    lines.append(f"  split (user_data.split_seed {cfg.user_data.split_seed}, validation_fraction "
                 f"{cfg.user_data.validation_fraction:g}, test_fraction {cfg.user_data.test_fraction:g}, disjoint by "
                 f"{'group' if groups else 'class'}): " + ", ".join(_split_words(source, split, name) for name in splits.SPLITS))
    lines += _capacity_lines(source, split)
    splits.check_split(cfg, str(source.path), source.classes, counts, split, source.grouped)
    lines.append(f"  {ways}-way {shots}-shot with {query} quer{'y' if query == 1 else 'ies'} per class: fits; "
                 f"next: metacompare compare --data {source.path} --ways {ways} --shots {shots} --budget cpu:300")
    return "\n".join(lines)


def _split_words(source, split: dict, name: str) -> str:
    ids = split[name]
    if not ids:
        return f"{name} = the training classes (fresh episodes)"
    groups = {source.groups[c] for c in ids} - {""}
    return f"{name} {len(ids)} classes" + (f" ({len(groups)} group{'s' if len(groups) != 1 else ''})" if groups else "")


def _capacity_lines(source, split: dict) -> list[str]:
    """The largest N-way K-shot task every split can serve, for a few query sizes."""
    used = {name: split[name] or split["train"] for name in splits.SPLITS}
    ways = min(len(ids) for ids in used.values())
    smallest = min(source.per_class[c] for ids in used.values() for c in ids)
    lines = []
    for q in QUERIES:
        if smallest - q >= 1:
            lines.append(f"  largest task with {q} quer{'y' if q == 1 else 'ies'} per class: {ways}-way "
                         f"{smallest - q}-shot (smallest split {ways} classes, smallest class {smallest} examples)")
    return lines or [f"  largest task: none (a class has {smallest} example{'s' if smallest != 1 else ''}; "
                     f"a task needs at least 2 per class)"]


def _shape_lines(cfg, source, verify: bool) -> list[str]:
    if source.form == "table":
        return [f"  vectors: {source.payload.features.shape[1]} features per row"
                + (" (standardised by the training classes)" if cfg.user_data.standardize else "")]
    if source.form == "text":
        tokens = source.payload.tokens
        return [f"  tokens per text: min {min(tokens)}, median {statistics.median(tokens):g}, max {max(tokens)}; "
                f"kept: the first user_data.max_tokens = {cfg.user_data.max_tokens}"]
    index = source.payload
    step = max(1, len(index.files) // PROBE_FILES)
    sampled = [images.header(index.root / name, index.root) for name in index.files[::step][:PROBE_FILES]]
    sizes = sorted({size for _, size in sampled})
    channels, size = image_shape(cfg, index)
    lines = [f"  images ({len(sampled)} headers read): sizes {', '.join(f'{w}x{h}' for w, h in sizes[:4])}"
             f"{' ...' if len(sizes) > 4 else ''}; modes {', '.join(sorted({m for m, _ in sampled}))} -> "
             f"{'grey' if channels == 1 else 'colour'}, resized to {size}x{size}"
             + (f"; {index.ignored} hidden/system files left out" if index.ignored else "")]
    if verify:
        bad = []
        for name in index.files:
            try:
                images.verify(index.root / name, index.root)
            except DataError as err:
                bad.append(str(err))
        if bad:
            raise DataError(f"{len(bad)} of {len(index.files)} images are unreadable; the first: {bad[0]}")
        lines.append(f"  verified: all {len(index.files)} images decode")
    return lines
