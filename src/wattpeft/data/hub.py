"""Hub dataset definitions (for users who have a dataset hub): path, config, task, columns.

Torch- and pandas-free, so that config validation can learn a hub dataset's task while
Snakemake parses the workflow.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HubDataset:
    path: str
    config: str | None
    task: str
    columns: dict[str, str]  # canonical -> hub column
    splits: dict[str, str]  # our split -> hub split
    label_names: tuple[str, ...] | None = None


# GLUE test labels are hidden (-1): its validation split is the test set and validation is cut from train.
HUB_DATASETS = {
    "glue/sst2": HubDataset(
        "nyu-mll/glue", "sst2", "classification", {"text": "sentence", "label": "label"},
        {"train": "train", "test": "validation"}, ("negative", "positive"),
    ),
    "glue/cola": HubDataset(
        "nyu-mll/glue", "cola", "classification", {"text": "sentence", "label": "label"},
        {"train": "train", "test": "validation"}, ("unacceptable", "acceptable"),
    ),
    "cnn_dailymail": HubDataset(
        "abisee/cnn_dailymail", "3.0.0", "summarisation", {"source": "article", "target": "highlights"},
        {"train": "train", "validation": "validation", "test": "test"},
    ),
}
