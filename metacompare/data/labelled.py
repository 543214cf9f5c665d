"""The class index every task dataset here hands to ``l2l.data.MetaDataset``."""

from __future__ import annotations

from torch.utils.data import Dataset


class Labelled(Dataset):
    """A dataset of examples with one class each: ``labels_to_indices`` and ``indices_to_labels`` built
    once from ``labels``, so learn2learn's ``MetaDataset`` need not read every item to find them."""

    def __init__(self, labels: list[int]):
        self.labels = labels
        self.labels_to_indices: dict[int, list[int]] = {}
        for i, label in enumerate(labels):
            self.labels_to_indices.setdefault(label, []).append(i)
        self.indices_to_labels = dict(enumerate(labels))

    def __len__(self) -> int:
        return len(self.labels)
