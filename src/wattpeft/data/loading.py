"""Reading tokenised splits back: a torch Dataset over one parquet file and padding collators."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from wattpeft.utils.io import read_json

SPLITS = ("train", "validation", "test")
TASKS = ("classification", "summarisation", "lm", "text2text")
IGNORE_INDEX = -100  # label value that cross-entropy skips


class TokenisedSplit(Dataset):
    """One split written by `tokenise_dataset`; each item is a dict of that row's columns."""

    def __init__(self, path: str | Path, columns: Sequence[str] | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"tokenised split not found: {self.path}")
        table = pq.read_table(self.path, columns=list(columns) if columns else None)
        self.column_names = list(table.column_names)
        self._columns = {name: table.column(name).to_pylist() for name in self.column_names}
        self._rows = table.num_rows

    def __len__(self) -> int:
        return self._rows

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self._rows <= index < self._rows:
            raise IndexError(f"index {index} out of range for {self._rows} rows in {self.path}")
        return {name: values[index] for name, values in self._columns.items()}


def load_split(folder: str | Path, split: str, columns: Sequence[str] | None = None) -> TokenisedSplit:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits are {SPLITS}")
    return TokenisedSplit(Path(folder) / f"{split}.parquet", columns)


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest.json in {folder}: was it written by tokenise_dataset?")
    return read_json(path)


def pad_sequences(seqs: Sequence[Sequence[int]], value: int, side: str = "right") -> torch.Tensor:
    """Pad lists of ints to the longest one into a (batch, length) int64 tensor."""
    width = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for row, seq in enumerate(seqs):
        if not len(seq):
            continue
        values = torch.as_tensor(list(seq), dtype=torch.long)
        if side == "right":
            out[row, : len(seq)] = values
        else:
            out[row, width - len(seq):] = values
    return out


def attention_mask(seqs: Sequence[Sequence[int]], side: str = "right") -> torch.Tensor:
    """1 over each sequence's tokens, 0 over the padding `pad_sequences` adds (same side)."""
    return pad_sequences([[1] * len(s) for s in seqs], 0, side)


def make_collator(task: str, pad_id: int) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    """Collator for training: right padding to the longest sequence in the batch.

    classification: labels from the `label` column; summarisation and text2text: the
    stored `labels` (prompt already -100) padded with -100; lm: labels = input_ids with
    -100 on padding. The pad id may equal eos, so padding is never inferred from ids.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks are {TASKS}")
    if pad_id is None:
        raise ValueError("make_collator needs a pad id (the tokenised manifest records pad_token_id)")

    def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
        ids = [item["input_ids"] for item in batch]
        out = {"input_ids": pad_sequences(ids, pad_id), "attention_mask": attention_mask(ids)}
        if task == "classification":
            out["labels"] = torch.tensor([int(item["label"]) for item in batch], dtype=torch.long)
        elif task in ("summarisation", "text2text"):
            out["labels"] = pad_sequences([item["labels"] for item in batch], IGNORE_INDEX)
        else:
            out["labels"] = pad_sequences(ids, IGNORE_INDEX)
        return out

    return collate


def make_prompt_collator(pad_id: int) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    """Collator for generation from `prompt_ids`: left padding, so every prompt ends at the same column."""

    def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
        prompts = [item["prompt_ids"] for item in batch]
        return {
            "input_ids": pad_sequences(prompts, pad_id, side="left"),
            "attention_mask": attention_mask(prompts, side="left"),
        }

    return collate
