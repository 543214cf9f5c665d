"""Labelled texts from a CSV or Parquet table, as hashed token ids (``dataset: text``).

Tokenised by scikit-learn (already a dependency): ``HashingVectorizer``'s analyzer splits and
lower-cases words and adds word bigrams, and each token is hashed (MurmurHash3, the vectorizer's own
hash) into ``vocab_buckets - 1`` ids, 0 being padding. Hashing needs no vocabulary fitted on the data,
so nothing of the test classes' words shapes training, the ids are the same in every run and split,
and memory does not grow with the corpus (Weinberger et al. 2009, feature hashing). A text keeps its
first ``max_tokens`` tokens. The ``bag_of_embeddings`` network (:mod:`metacompare.models`) averages
their trainable embeddings, as fastText does (Joulin et al. 2017), so every meta-learner adapts it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.utils import murmurhash3_32

from metacompare.data.source import register
from metacompare.data.table import Table, Vectors, labels_of, read_frame
from metacompare.data.user import Source, file_digest, members
from metacompare.errors import DataError
from metacompare.config.runconfig import RunConfig


def tokenizer():
    """scikit-learn's word analyzer: lower-cased words of two or more characters, plus word bigrams."""
    return HashingVectorizer(ngram_range=(1, 2), lowercase=True).build_analyzer()


def token_ids(texts: list[str], buckets: int, max_tokens: int) -> np.ndarray:
    """``[len(texts), max_tokens]`` int64 ids in 1..buckets-1, padded with 0."""
    analyze = tokenizer()
    ids = np.zeros((len(texts), max_tokens), dtype=np.int64)
    for row, text in enumerate(texts):
        tokens = analyze(text)[:max_tokens]
        ids[row, :len(tokens)] = [1 + murmurhash3_32(t, seed=0, positive=True) % (buckets - 1) for t in tokens]
    return ids


@dataclass
class TextSource:
    path: Path
    ids: np.ndarray
    classes: list[str]
    labels: list[int]
    tokens: list[int]  # tokens per text before truncation


def read_texts(path: str | Path, text_column: str, label_column: str, buckets: int, max_tokens: int) -> TextSource:
    path = Path(path)
    frame = read_frame(path)
    classes, labels = labels_of(frame, label_column, path)
    if text_column not in frame.columns:
        labels_of(frame, text_column, path, option="text_column")  # raises, naming the columns
    column = frame[text_column]
    empty = (column.isna() | (column.astype(str).str.strip() == "")).to_numpy().nonzero()[0]
    if len(empty):
        raise DataError(f"{path}: row {empty[0] + 1} (line {empty[0] + 2}) has an empty {text_column}; "
                        f"fill it or drop the row")
    texts = [str(t) for t in column]
    analyze = tokenizer()
    counts = [len(analyze(t)) for t in texts]
    wordless = [i for i, n in enumerate(counts) if n == 0]
    if wordless:
        raise DataError(f"{path}: row {wordless[0] + 1} (line {wordless[0] + 2}) has no word of two or more "
                        f"letters ({texts[wordless[0]][:40]!r}); drop it or give it words")
    return TextSource(path, token_ids(texts, buckets, max_tokens), classes, labels, counts)


class Text(Table):
    """A table of texts, hashed into ``user_data.vocab_buckets`` token ids, one column naming each row's class."""

    name = "text"
    networks = ("bag_of_embeddings",)
    grouped_eval = False  # the bag of embeddings has no grouped form (metacompare.engines.batch_eval)

    def read(self, cfg: RunConfig, path: Path) -> Source:
        ud = cfg.user_data
        texts = read_texts(path, ud.text_column, ud.label_column, ud.vocab_buckets, ud.max_tokens)
        return Source("text", path, texts.classes, [""] * len(texts.classes), texts.labels, file_digest(path), texts)

    def input_shape(self, cfg: RunConfig, channels: int | None = None) -> tuple[int, ...]:
        return (cfg.user_data.max_tokens,)

    def prepare(self, cfg: RunConfig, source: Source, train: list[int]) -> None:
        return None

    def dataset(self, cfg: RunConfig, source: Source, chosen: list[int], prepared: None) -> Vectors:
        indices, labels = members(source.labels, chosen)
        return Vectors(torch.from_numpy(source.payload.ids[indices]), labels)

    def payload_lines(self, cfg: RunConfig, source: Source, verify: bool) -> list[str]:
        tokens = source.payload.tokens
        return [f"  tokens per text: min {min(tokens)}, median {statistics.median(tokens):g}, max {max(tokens)}; "
                f"kept: the first user_data.max_tokens = {cfg.user_data.max_tokens}"]


register(Text())
