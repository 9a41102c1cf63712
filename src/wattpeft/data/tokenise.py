"""Tokenise a dataset's splits with a model's own tokenizer into parquet files plus a manifest.

Parquet schemas (one file per split):
- classification: input_ids list<int32> (special tokens added, truncated to max_length),
  label int64, text string
- summarisation (decoder-only LM): prompt_ids list<int32>, input_ids list<int32>
  (= prompt_ids + target_ids + eos), labels list<int32> (-100 over the prompt, then
  target_ids + eos), reference string (target text), aspect string (null when none)
- lm: input_ids list<int32> (truncated to max_length)
- text2text (any castable source for a decoder: prompt -> target): the summarisation
  columns prompt_ids, input_ids, labels, reference (the target text), plus label int64
  (the class index; -1 for generation rows). A classification row's target is its label
  word after the prompt template (`{text}` = the row's text) and a space; a generation
  row's is its target, after the summarisation prompt unless a template is given.
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
from wattpeft.data.registry import DatasetError, DatasetRows, load_dataset_rows
from wattpeft.utils.io import atomic_path, sha256_file, stable_hash, write_json

DEFAULT_MAX_LENGTH = 256
DEFAULT_MAX_TARGET_LENGTH = 64
ASPECT_PROMPT = "Summarise the {aspect} of this paper.\n\n"
PLAIN_PROMPT = "Summarise this text.\n\n"
PROMPT_SUFFIX = "\n\nSummary:"
DEFAULT_CLASSIFICATION_PROMPT = "{text}\nAnswer:"  # text2text classification without a `prompt`

# Prompt -> target rows for a decoder (summarisation and text2text share these columns).
PROMPT_TARGET_FIELDS = [
    ("prompt_ids", pa.list_(pa.int32())),
    ("input_ids", pa.list_(pa.int32())),
    ("labels", pa.list_(pa.int32())),
    ("reference", pa.string()),
]
SCHEMAS = {
    "classification": pa.schema(
        [("input_ids", pa.list_(pa.int32())), ("label", pa.int64()), ("text", pa.string())]
    ),
    "summarisation": pa.schema(PROMPT_TARGET_FIELDS + [("aspect", pa.string())]),
    "lm": pa.schema([("input_ids", pa.list_(pa.int32()))]),
    "text2text": pa.schema(PROMPT_TARGET_FIELDS + [("label", pa.int64())]),
}
TOKEN_COLUMNS = {"classification": ("input_ids", "label"), "summarisation": ("input_ids", "labels", "prompt_ids"),
                 "lm": ("input_ids",), "text2text": ("input_ids", "labels", "prompt_ids", "label")}
# How a text2text split is scored, by the rows' source task (evaluation/text2text.py).
SCORING = {"classification": "label_likelihood", "summarisation": "rouge"}
GENERATION_ROW = -1  # text2text `label` of a row without a class


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


def target_ids(tokenizer: Any, targets: list[str], tails: list[str]) -> list[list[int]]:
    """Each target's ids as it continues its prompt's tail ("...Summary:") after a space.

    Tokenised together with the tail so that the ids are the ones the model sees after the
    prompt; a target whose ids do not split cleanly from the tail's is tokenised alone.
    """
    tail_ids = {tail: _ids(tokenizer, [tail])[0] for tail in set(tails)}
    joined = _ids(tokenizer, [tail + " " + t for tail, t in zip(tails, targets)])
    alone = _ids(tokenizer, [" " + t for t in targets])
    return [
        ids[len(tail_ids[tail]):] if ids[: len(tail_ids[tail])] == tail_ids[tail] else fallback
        for tail, ids, fallback in zip(tails, joined, alone)
    ]


def encode_prompted(
    tokenizer: Any, frames: list[tuple[str, str]], sources: list[str], targets: list[str],
    max_length: int, max_target: int | None,
) -> tuple[dict[str, list], list[bool]]:
    """Prompt = head + source + tail (the source cut to fit), then target + eos; labels mask the prompt.

    `frames`: each row's (head, tail) text around its source. Only the source is cut to fit
    max_length; the target is capped by `max_target` alone (None: never cut).
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("prompt -> target rows need a decoder tokenizer with an eos token")
    # A space that ends a head belongs to the source's first word (BPE tokens carry their leading space).
    sources = [head[len(head.rstrip(" ")):] + source for (head, _), source in zip(frames, sources)]
    frames = [(head.rstrip(" "), tail) for head, tail in frames]
    pieces = {piece: _ids(tokenizer, [piece])[0] for frame in set(frames) for piece in frame}
    lead = _leading_special_ids(tokenizer)
    full_targets = target_ids(tokenizer, targets, [tail for _, tail in frames])
    columns: dict[str, list] = {"prompt_ids": [], "input_ids": [], "labels": []}
    truncated = []
    for (head, tail), source_ids, full_target_ids in zip(frames, _ids(tokenizer, sources), full_targets):
        target = full_target_ids[:max_target] if max_target is not None else full_target_ids
        fixed = len(lead) + len(pieces[head]) + len(pieces[tail]) + len(target) + 1
        budget = max_length - fixed
        if budget < 1:
            raise ValueError(
                f"max_length {max_length} leaves no room for the source: the prompt frame, "
                f"{len(target)} target tokens and eos already take {fixed}"
            )
        prompt = lead + pieces[head] + source_ids[:budget] + pieces[tail]
        columns["prompt_ids"].append(prompt)
        columns["input_ids"].append(prompt + target + [eos])
        columns["labels"].append([IGNORE_INDEX] * len(prompt) + target + [eos])
        truncated.append(len(source_ids) > budget or len(full_target_ids) > len(target))
    return columns, truncated


def _aspects(frame: pd.DataFrame) -> list[str | None]:
    return frame["aspect"].tolist() if "aspect" in frame.columns else [None] * len(frame)


def encode_summarisation(tokenizer: Any, frame: pd.DataFrame, settings: dict) -> tuple[pa.Table, list[bool]]:
    """Prompt (truncated from the source side) + target + eos; labels mask the prompt with -100."""
    aspects = _aspects(frame)
    frames = [(prompt_head(aspect), PROMPT_SUFFIX) for aspect in aspects]
    columns, truncated = encode_prompted(
        tokenizer, frames, frame["source"].tolist(), frame["target"].tolist(),
        settings["max_length"], settings["max_target_length"],
    )
    columns.update(reference=frame["target"].tolist(), aspect=aspects)
    return pa.Table.from_pydict(columns, schema=SCHEMAS["summarisation"]), truncated


def split_template(template: str) -> tuple[str, str]:
    """A prompt template's text before and after its one `{text}`."""
    head, _, tail = template.partition("{text}")
    return head, tail


def encode_text2text(tokenizer: Any, frame: pd.DataFrame, settings: dict) -> tuple[pa.Table, list[bool]]:
    """Classification rows: prompt template -> label word; generation rows: prompt -> target."""
    template = settings["prompt"]
    if settings["source_task"] == "classification":
        labels = frame["label"].astype("int64").tolist()
        sources, targets = frame["text"].tolist(), [settings["label_words"][label] for label in labels]
        frames, max_target = [split_template(template)] * len(frame), None
    else:
        labels = [GENERATION_ROW] * len(frame)
        sources, targets = frame["source"].tolist(), frame["target"].tolist()
        frames = ([split_template(template)] * len(frame) if template
                  else [(prompt_head(aspect), PROMPT_SUFFIX) for aspect in _aspects(frame)])
        max_target = settings["max_target_length"]
    columns, truncated = encode_prompted(tokenizer, frames, sources, targets, settings["max_length"], max_target)
    columns.update(reference=targets, label=labels)
    return pa.Table.from_pydict(columns, schema=SCHEMAS["text2text"]), truncated


ENCODERS = {
    "classification": encode_classification,
    "summarisation": encode_summarisation,
    "lm": encode_lm,
    "text2text": encode_text2text,
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


def _settings(cfg: dict, rows: DatasetRows, tokenizer: Any) -> dict[str, Any]:
    task = rows.task
    settings: dict[str, Any] = {"max_length": int(cfg.get("max_length", DEFAULT_MAX_LENGTH))}
    if "summarisation" in (task, rows.source_task):
        settings["max_target_length"] = int(cfg.get("max_target_length", DEFAULT_MAX_TARGET_LENGTH))
        if not cfg.get("prompt"):
            settings["prompt_template"] = ASPECT_PROMPT + "{source}" + PROMPT_SUFFIX
            settings["plain_prompt_template"] = PLAIN_PROMPT + "{source}" + PROMPT_SUFFIX
    if task == "text2text":
        settings.update(_text2text_settings(cfg, rows, tokenizer))
    if settings["max_length"] < 2:
        raise ValueError(f"max_length must be at least 2, got {settings['max_length']}")
    return settings


def _text2text_settings(cfg: dict, rows: DatasetRows, tokenizer: Any) -> dict[str, Any]:
    """How prompts and targets are made and scored; label_word_ids as they follow the prompt."""
    source_task = rows.source_task
    if source_task not in SCORING:
        raise DatasetError(f"dataset {rows.name!r}: cannot cast a {source_task!r} dataset to text2text")
    template = cfg.get("prompt") or (DEFAULT_CLASSIFICATION_PROMPT if source_task == "classification" else None)
    if template is not None and template.count("{text}") != 1:
        raise DatasetError(f"dataset {rows.name!r}.prompt: {template!r} must hold {{text}} exactly once")
    # prompt None: a generation source keeps the summarisation prompt (prompt_template, per aspect).
    settings = {"source_task": source_task, "scoring": SCORING[source_task], "prompt": template,
                "label_words": None, "label_word_ids": None}
    if source_task == "classification":
        words = list(cfg.get("label_words") or rows.label_names)
        if len(words) != len(rows.label_names):
            raise DatasetError(f"dataset {rows.name!r}.label_words: {len(words)} word(s) for "
                               f"{len(rows.label_names)} label(s) {rows.label_names}")
        tail = split_template(template)[1]
        settings.update(label_words=words, label_word_ids=target_ids(tokenizer, words, [tail] * len(words)))
    return settings


# --------------------------------------------------------------------------- public API


def tokenise_rows(
    rows: DatasetRows, tokenizer: Any, cfg: dict, out_dir: str | Path, tokenizer_source: str | Path = ""
) -> dict[str, Any]:
    """Write already-loaded rows as tokenised parquet splits + manifest.json into `out_dir` (atomically)."""
    settings = _settings(cfg, rows, tokenizer)
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
