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

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.utils import murmurhash3_32

from metacompare.data.table import labels_of, read_frame
from metacompare.errors import DataError


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
