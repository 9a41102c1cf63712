"""Tokenise a dataset's splits with a model's own tokenizer into parquet files plus a manifest.

Parquet schemas (one file per split):
- classification: input_ids list<int32> (special tokens added, truncated to max_length),
  label int64, text string
- summarisation (decoder-only LM): prompt_ids list<int32>, input_ids list<int32>
  (= prompt_ids + target_ids + eos), labels list<int32> (-100 over the prompt, then
  target_ids + eos), reference string (target text), aspect string (null when none)
- lm: input_ids list<int32> (truncated to max_length)
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from wattpeft.data.loading import IGNORE_INDEX
from wattpeft.data.registry import DatasetRows, load_dataset_rows
from wattpeft.utils.io import atomic_path, sha256_file, stable_hash, write_json

DEFAULT_MAX_LENGTH = 256
DEFAULT_MAX_TARGET_LENGTH = 64
ASPECT_PROMPT = "Summarise the {aspect} of this paper.\n\n"
PLAIN_PROMPT = "Summarise this text.\n\n"
PROMPT_SUFFIX = "\n\nSummary:"

SCHEMAS = {
    "classification": pa.schema(
        [("input_ids", pa.list_(pa.int32())), ("label", pa.int64()), ("text", pa.string())]
    ),
    "summarisation": pa.schema(
        [
            ("prompt_ids", pa.list_(pa.int32())),
            ("input_ids", pa.list_(pa.int32())),
            ("labels", pa.list_(pa.int32())),
            ("reference", pa.string()),
            ("aspect", pa.string()),
        ]
    ),
    "lm": pa.schema([("input_ids", pa.list_(pa.int32()))]),
}
TOKEN_COLUMNS = {"classification": ("input_ids", "label"), "summarisation": ("input_ids", "labels", "prompt_ids"),
                 "lm": ("input_ids",)}


def _log(message: str) -> None:
    print(f"[wattpeft.tokenise] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- tokenizer helpers


def load_tokenizer(model_dir_or_id: str | Path) -> Any:
    """The model's own tokenizer (a local folder, or a hub id for users with a hub)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir_or_id))


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad id; decoder tokenizers without one pad with eos."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise ValueError("tokenizer has neither a pad nor an eos token: cannot pad batches")


def tokenizer_identity(tokenizer: Any, model_dir_or_id: str | Path = "") -> dict[str, Any]:
    """Where the tokenizer came from plus hashes of its definition (file and in-memory)."""
    source = str(model_dir_or_id or tokenizer.name_or_path)
    tokenizer_json = Path(source) / "tokenizer.json"
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return {
        "source": source,
        "class": type(tokenizer).__name__,
        "tokenizer_json_sha256": sha256_file(tokenizer_json) if source and tokenizer_json.is_file() else None,
        "backend_sha256": hashlib.sha256(backend.to_str().encode()).hexdigest() if backend else None,
        "vocab_size": len(tokenizer),
        "pad_token_id": pad_token_id(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }


def _ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids without special tokens and without truncation (verbose=False: no length warning)."""
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def _leading_special_ids(tokenizer: Any) -> list[int]:
    """Special tokens the tokenizer puts before a text (e.g. Llama's <s>); empty for SmolLM2."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return list(full[:start])
    return []


def _special_token_count(tokenizer: Any) -> int:
    return len(tokenizer("a", add_special_tokens=True)["input_ids"]) - len(
        tokenizer("a", add_special_tokens=False)["input_ids"]
    )


# --------------------------------------------------------------------------- encoders


def _encode_truncated(tokenizer: Any, texts: list[str], max_length: int) -> tuple[list[list[int]], list[bool]]:
    """Encode with the tokenizer's special tokens, truncated to max_length; flag rows that lost tokens."""
    n_special = _special_token_count(tokenizer)
    full_lengths = [len(ids) + n_special for ids in _ids(tokenizer, texts)]
    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return encoded, [length > max_length for length in full_lengths]


def encode_classification(tokenizer: Any, frame: pd.DataFrame, settings: dict) -> tuple[pa.Table, list[bool]]:
    texts = frame["text"].tolist()
    input_ids, truncated = _encode_truncated(tokenizer, texts, settings["max_length"])
    columns = {"input_ids": input_ids, "label": frame["label"].astype("int64").tolist(), "text": texts}
    return pa.Table.from_pydict(columns, schema=SCHEMAS["classification"]), truncated


def encode_lm(tokenizer: Any, frame: pd.DataFrame, settings: dict) -> tuple[pa.Table, list[bool]]:
    input_ids, truncated = _encode_truncated(tokenizer, frame["text"].tolist(), settings["max_length"])
    return pa.Table.from_pydict({"input_ids": input_ids}, schema=SCHEMAS["lm"]), truncated


def prompt_head(aspect: str | None) -> str:
    return ASPECT_PROMPT.format(aspect=aspect) if aspect else PLAIN_PROMPT


def _target_ids(tokenizer: Any, targets: list[str]) -> list[list[int]]:
    """Target ids as they continue "...Summary:" (a space after the colon), when the split is clean."""
    suffix_ids = _ids(tokenizer, [PROMPT_SUFFIX])[0]
    joined = _ids(tokenizer, [PROMPT_SUFFIX + " " + t for t in targets])
    alone = _ids(tokenizer, [" " + t for t in targets])
    return [
        ids[len(suffix_ids):] if ids[: len(suffix_ids)] == suffix_ids else fallback
        for ids, fallback in zip(joined, alone)
    ]


def encode_summarisation(tokenizer: Any, frame: pd.DataFrame, settings: dict) -> tuple[pa.Table, list[bool]]:
    """Prompt (truncated from the source side) + target + eos; labels mask the prompt with -100."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("summarisation needs a decoder tokenizer with an eos token")
    max_length, max_target = settings["max_length"], settings["max_target_length"]
    aspects = frame["aspect"].tolist() if "aspect" in frame.columns else [None] * len(frame)
    heads = {a: _ids(tokenizer, [prompt_head(a)])[0] for a in set(aspects)}
    lead, suffix = _leading_special_ids(tokenizer), _ids(tokenizer, [PROMPT_SUFFIX])[0]
    sources = _ids(tokenizer, frame["source"].tolist())
    targets = _target_ids(tokenizer, frame["target"].tolist())
    columns: dict[str, list] = {name: [] for name in SCHEMAS["summarisation"].names}
    truncated = []
    for aspect, source_ids, full_target_ids, reference in zip(aspects, sources, targets, frame["target"]):
        target_ids = full_target_ids[:max_target]
        fixed = len(lead) + len(heads[aspect]) + len(suffix) + len(target_ids) + 1
        budget = max_length - fixed
        if budget < 1:
            raise ValueError(
                f"max_length {max_length} leaves no room for the source: the prompt frame, "
                f"{len(target_ids)} target tokens and eos already take {fixed}"
            )
        prompt = lead + heads[aspect] + source_ids[:budget] + suffix
        columns["prompt_ids"].append(prompt)
        columns["input_ids"].append(prompt + target_ids + [eos])
        columns["labels"].append([IGNORE_INDEX] * len(prompt) + target_ids + [eos])
        columns["reference"].append(reference)
        columns["aspect"].append(aspect)
        truncated.append(len(source_ids) > budget or len(full_target_ids) > max_target)
    return pa.Table.from_pydict(columns, schema=SCHEMAS["summarisation"]), truncated


ENCODERS = {
    "classification": encode_classification,
    "summarisation": encode_summarisation,
    "lm": encode_lm,
}


# --------------------------------------------------------------------------- manifest pieces


def content_hash(table: pa.Table, columns: tuple[str, ...]) -> str:
    """sha256 of the token columns' values: independent of parquet writer version and metadata."""
    digest = hashlib.sha256()
    for name in columns:
        digest.update(name.encode())
        digest.update(json.dumps(table.column(name).to_pylist(), separators=(",", ":")).encode())
    return digest.hexdigest()


def _split_summary(table: pa.Table, truncated: list[bool], path: Path, task: str) -> dict[str, Any]:
    lengths = [len(ids) for ids in table.column("input_ids").to_pylist()]
    return {
        "rows": table.num_rows,
        "file": path.name,
        "sha256": sha256_file(path),
        "content_hash": content_hash(table, TOKEN_COLUMNS[task]),
        "truncated_share": sum(truncated) / len(truncated) if truncated else 0.0,
        "mean_tokens": sum(lengths) / len(lengths) if lengths else 0.0,
        "max_tokens": max(lengths, default=0),
    }


def _settings(cfg: dict, task: str) -> dict[str, Any]:
    settings = {"max_length": int(cfg.get("max_length", DEFAULT_MAX_LENGTH))}
    if task == "summarisation":
        settings["max_target_length"] = int(cfg.get("max_target_length", DEFAULT_MAX_TARGET_LENGTH))
        settings["prompt_template"] = ASPECT_PROMPT + "{source}" + PROMPT_SUFFIX
        settings["plain_prompt_template"] = PLAIN_PROMPT + "{source}" + PROMPT_SUFFIX
    if settings["max_length"] < 2:
        raise ValueError(f"max_length must be at least 2, got {settings['max_length']}")
    return settings


# --------------------------------------------------------------------------- public API


def tokenise_rows(
    rows: DatasetRows, tokenizer: Any, cfg: dict, out_dir: str | Path, tokenizer_source: str | Path = ""
) -> dict[str, Any]:
    """Write already-loaded rows as tokenised parquet splits + manifest.json into `out_dir` (atomically)."""
    settings = _settings(cfg, rows.task)
    encoder = ENCODERS[rows.task]
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        splits = {}
        for split, frame in rows.splits.items():
            table, truncated = encoder(tokenizer, frame, settings)
            path = tmp / f"{split}.parquet"
            pq.write_table(table, path)
            splits[split] = _split_summary(table, truncated, path, rows.task)
            _log(f"{rows.name}/{split}: {table.num_rows} rows, "
                 f"{splits[split]['truncated_share']:.1%} truncated")
        manifest = {
            "dataset": rows.name,
            "task": rows.task,
            "label_names": rows.label_names,
            "num_labels": rows.num_labels,
            **settings,
            "pad_token_id": pad_token_id(tokenizer),
            "tokenizer": tokenizer_identity(tokenizer, tokenizer_source),
            "schema": {name: str(SCHEMAS[rows.task].field(name).type) for name in SCHEMAS[rows.task].names},
            "splits": splits,
            "data_hash": stable_hash({s: info["content_hash"] for s, info in splits.items()}),
            "config_hash": stable_hash(cfg),
            "dataset_config": cfg,
            "provenance": rows.provenance,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(tmp / "manifest.json", manifest)
    return manifest


def tokenise_dataset(
    name: str, cfg: dict, model_dir_or_id: str | Path, out_dir: str | Path, resources_dir: str | Path
) -> dict[str, Any]:
    """Load dataset `name`, tokenise every split with the model's tokenizer, write parquet + manifest."""
    rows = load_dataset_rows(name, cfg, resources_dir)
    tokenizer = load_tokenizer(model_dir_or_id)
    return tokenise_rows(rows, tokenizer, cfg, out_dir, tokenizer_source=model_dir_or_id)
