"""Datasets: registry of sources -> canonical rows and splits, tokenisation to parquet, loading back."""

from wattpeft.data.loading import (
    IGNORE_INDEX,
    SPLITS,
    TASKS,
    TokenisedSplit,
    load_split,
    make_collator,
    make_prompt_collator,
    pad_sequences,
    read_manifest,
)
from wattpeft.data.registry import (
    HUB_DATASETS,
    DatasetError,
    DatasetRows,
    dataset_input_paths,
    load_dataset_rows,
)
from wattpeft.data.tokenise import load_tokenizer, pad_token_id, tokenise_dataset, tokenise_rows

__all__ = [
    "IGNORE_INDEX", "SPLITS", "TASKS", "HUB_DATASETS", "DatasetError", "DatasetRows", "TokenisedSplit",
    "dataset_input_paths", "load_dataset_rows", "load_split", "load_tokenizer", "make_collator",
    "make_prompt_collator", "pad_sequences", "pad_token_id", "read_manifest", "tokenise_dataset",
    "tokenise_rows",
]
