"""Text-to-text casts (seed 003's continual stream): tokenisation, scoring, VADER assets, hub
definitions and the seed's config. Uses the real SmolLM2 tokenizer and a tiny random Llama."""

from __future__ import annotations

import math
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
import torch
import yaml

from wattpeft.config import SCHEMA_PATH, _field
from wattpeft.data.hub import HUB_DATASETS, config_cast_problems
from wattpeft.data.loading import IGNORE_INDEX, load_split, make_collator, make_prompt_collator
from wattpeft.data.registry import VADER_FILES, DatasetError, DatasetRows, _hub_frame, load_dataset_rows
from wattpeft.data.tokenise import tokenise_rows
from wattpeft.evaluation.text2text import class_log_likelihoods, score_split

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = ROOT / "resources" / "models" / "smollm2"
PROMPT = "Review: {text}\nSentiment:"

# SmolLM2's own tokenizer where the asset is materialised (make run); else, as on a fresh
# clone in CI, the byte-level tokenizer of the tiny test models: every test runs either way.
REAL_TOKENIZER = (SMOLLM2 / "tokenizer.json").is_file()
SUMMARY_MAX_LENGTH = 64 if REAL_TOKENIZER else 192  # bytes are longer than BPE tokens


@pytest.fixture(scope="module")
def tokenizer():
    from wattpeft.assets import build_byte_tokenizer
    from wattpeft.models import load_tokenizer

    return load_tokenizer(SMOLLM2) if REAL_TOKENIZER else build_byte_tokenizer("llama")


@pytest.fixture(scope="module")
def tiny_llama(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


def _rows(task_frame: pd.DataFrame, source_task: str, label_names=None) -> DatasetRows:
    splits = {split: task_frame for split in ("train", "validation", "test")}
    return DatasetRows("toy", "text2text", label_names, splits, source_task=source_task)


def _classification_frame(n: int = 12) -> pd.DataFrame:
    texts = [("a wonderful, moving film " if i % 2 else "a dull and tedious mess ") * (1 + 6 * (i % 3))
             for i in range(n)]
    return pd.DataFrame({"text": texts, "label": [i % 2 for i in range(n)]})


@pytest.fixture(scope="module")
def classification_dir(tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("t2t") / "cls"
    rows = _rows(_classification_frame(), "classification", ["negative", "positive"])
    tokenise_rows(rows, tokenizer, {"cast": "text2text", "prompt": PROMPT, "max_length": 40}, out)
    return out


@pytest.fixture(scope="module")
def summarisation_dir(tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("t2t") / "sum"
    frame = pd.DataFrame({
        "source": ["We study parsing of long documents with a new model. " * (1 + 20 * (i % 2)) for i in range(4)],
        "target": [f"We propose a compact parser number {i} for long inputs." for i in range(4)],
        "aspect": ["challenge", "approach", "outcome", "approach"],
    })
    tokenise_rows(_rows(frame, "summarisation"), tokenizer, {"cast": "text2text", "max_length": SUMMARY_MAX_LENGTH}, out)
    return out


def _manifest(folder: Path) -> dict:
    from wattpeft.data.loading import read_manifest

    return read_manifest(folder)


# --------------------------------------------------------------------------- tokenisation


def test_classification_cast_masks_the_prompt_and_keeps_the_label_word(classification_dir, tokenizer):
    manifest = _manifest(classification_dir)
    assert manifest["task"] == "text2text" and manifest["scoring"] == "label_likelihood"
    assert manifest["label_words"] == ["negative", "positive"] and manifest["prompt"] == PROMPT
    expected = [tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in manifest["label_words"]]
    assert manifest["label_word_ids"] == expected
    split = load_split(classification_dir, "test")
    truncated = 0
    for row in split:
        word = manifest["label_word_ids"][row["label"]]
        n_prompt = len(row["prompt_ids"])
        assert row["input_ids"] == row["prompt_ids"] + word + [tokenizer.eos_token_id]
        assert row["labels"] == [IGNORE_INDEX] * n_prompt + word + [tokenizer.eos_token_id]
        assert len(row["input_ids"]) <= 40 and row["reference"] == manifest["label_words"][row["label"]]
        assert tokenizer.decode(row["prompt_ids"]).endswith("\nSentiment:")  # source cut, never the frame
        truncated += len(row["input_ids"]) == 40
    assert truncated > 0 and manifest["splits"]["test"]["truncated_share"] > 0


def test_summarisation_cast_keeps_the_aspect_prompt(summarisation_dir, tokenizer):
    manifest = _manifest(summarisation_dir)
    assert manifest["scoring"] == "rouge" and manifest["label_word_ids"] is None
    for row in load_split(summarisation_dir, "test"):
        assert row["label"] == -1 and len(row["input_ids"]) <= SUMMARY_MAX_LENGTH
        prompt = tokenizer.decode(row["prompt_ids"], skip_special_tokens=True)
        assert prompt.startswith("Summarise the ") and prompt.endswith("\n\nSummary:")
        target = row["labels"][len(row["prompt_ids"]):]
        assert tokenizer.decode(target[:-1]).strip() == row["reference"]  # the whole target survives


def test_label_words_of_the_wrong_length_name_the_field(tmp_path):
    path = tmp_path / "r.csv"
    pd.DataFrame({"text": [f"t{i}" for i in range(20)], "label": ["a", "b"] * 10}).to_csv(path, index=False)
    cfg = {"source": "local", "path": str(path), "format": "csv", "task": "classification",
           "columns": {"text": "text", "label": "label"}, "cast": "text2text", "label_words": ["x", "y", "z"]}
    with pytest.raises(DatasetError, match=r"'r'.label_words: 3 word\(s\) for 2 label"):
        load_dataset_rows("r", cfg, tmp_path)
    rows = load_dataset_rows("r", {**cfg, "label_words": ["x", "y"]}, tmp_path)
    assert rows.task == "text2text" and rows.source_task == "classification"
    with pytest.raises(DatasetError, match="prompt: only used with cast"):
        load_dataset_rows("r", {k: v for k, v in cfg.items() if k not in ("cast", "label_words")} | {"prompt": "{text}"},
                          tmp_path)


# --------------------------------------------------------------------------- training side


def test_collators_validation_and_backbone_work_on_text2text(classification_dir, tiny_llama, tmp_path, tokenizer):
    from wattpeft.models import load_backbone
    from wattpeft.training.validation import validation_metrics

    rows = load_split(classification_dir, "validation")
    batch = make_collator("text2text", tokenizer.pad_token_id)([rows[0], rows[1]])
    words = _manifest(classification_dir)["label_word_ids"]
    assert (batch["labels"] != IGNORE_INDEX).sum() == sum(len(words[r["label"]]) + 1 for r in (rows[0], rows[1]))  # word + eos
    assert make_prompt_collator(tokenizer.pad_token_id)([rows[0]])["input_ids"].shape[1] == len(rows[0]["prompt_ids"])
    metrics = validation_metrics(tiny_llama, rows, make_collator("text2text", tokenizer.pad_token_id), "text2text")
    assert math.isfinite(metrics["eval_loss"]) and "accuracy" not in metrics
    tiny_llama.save_pretrained(tmp_path / "m")
    assert type(load_backbone(tmp_path / "m", "text2text")).__name__ == "LlamaForCausalLM"


# --------------------------------------------------------------------------- scorer


def test_one_forward_label_likelihood_equals_per_class_scoring(classification_dir, tiny_llama, tokenizer):
    manifest = _manifest(classification_dir)
    rows = load_split(classification_dir, "test")
    prompts = [row["prompt_ids"] for row in rows]
    # One token per word (SmolLM2's " negative" is one; a byte tokenizer's is not: the byte
    # after its space stands in, "n" and "p").
    words = [ids if len(ids) == 1 else ids[1:2] for ids in manifest["label_word_ids"]]
    assert all(len(w) == 1 for w in words) and words[0] != words[1]
    manifest = {**manifest, "label_word_ids": words}
    fast = class_log_likelihoods(tiny_llama, prompts, words, tokenizer.pad_token_id, 5)
    slow = class_log_likelihoods(tiny_llama, prompts, words, tokenizer.pad_token_id, 5, one_forward=False)
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)
    result = score_split(tiny_llama, rows, manifest, pad_id=tokenizer.pad_token_id, batch_size=5)
    expected = float((slow.argmax(-1) == torch.tensor([r["label"] for r in rows])).float().mean())
    assert result == {"metric": "accuracy", "score": pytest.approx(expected), "n": len(rows)}
    # Multi-token words take the per-class path.
    words = [tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in ("very negative", "quite positive")]
    multi = score_split(tiny_llama, rows, {**manifest, "label_word_ids": words}, pad_id=tokenizer.pad_token_id)
    assert 0.0 <= multi["score"] <= 1.0


def test_rouge_scoring_generates_from_the_prompts(summarisation_dir, tiny_llama, tokenizer):
    rows = [dict(row) for row in load_split(summarisation_dir, "test")]
    tiny_llama.train()
    result = score_split(tiny_llama, rows, _manifest(summarisation_dir), pad_id=tokenizer.pad_token_id,
                         max_new_tokens=4, tokenizer=tokenizer)
    assert result["metric"] == "rougeL" and result["n"] == 4 and 0.0 <= result["score"] <= 1.0
    assert tiny_llama.training  # the scorer gives the model back in the mode it found it


# --------------------------------------------------------------------------- VADER assets


@pytest.mark.parametrize("asset", ["vader-tweets", "vader-amazon"])
def test_vader_readers_parse_their_files(asset, tmp_path):
    real = ROOT / "resources" / "datasets" / asset
    if (real / "manifest.json").is_file():
        resources, n = ROOT / "resources", {"vader-tweets": 4196, "vader-amazon": 3600}[asset]
    else:
        # 30 rated texts, one rated 0 (dropped) and one repeat (dropped): enough for 3 splits.
        resources, n = tmp_path, 30
        folder = tmp_path / "datasets" / asset
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text('{"package": "p", "version": "1", "archive_sha256": "x", "files": {}}')
        lines = [f"{i}\t{(-1) ** i * (1 + i / 10):.1f}\ttext number {i}" for i in range(30)]
        lines += ["30\t0.0\tneutral text", "31\t2.0\ttext number 3"]
        (folder / VADER_FILES[asset]).write_text("\n".join(lines) + "\n")
    rows = load_dataset_rows(asset, {"source": "asset", "asset": asset}, resources)
    everything = pd.concat(rows.splits.values())
    assert len(everything) == n and everything["text"].is_unique and set(everything["label"]) == {0, 1}
    assert rows.label_names == ["negative", "positive"]


# --------------------------------------------------------------------------- schema, hub and seed 003


def _dataset_errors(spec: dict) -> list[str]:
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema["properties"]["datasets"])
    return [f"{_field(e)}: {e.message}" for e in validator.iter_errors({"d": spec})]


def test_schema_refuses_cast_keys_without_cast_and_prompts_without_text():
    base = {"source": "hub", "hub": "glue/sst2"}
    assert _dataset_errors({**base, "cast": "text2text", "prompt": PROMPT, "label_words": ["no", "yes"]}) == []
    assert any("prompt" in e and "cast" in e for e in _dataset_errors({**base, "prompt": PROMPT}))
    assert any("label_words" in e and "cast" in e for e in _dataset_errors({**base, "label_words": ["n", "y"]}))
    assert any(e.startswith("d.prompt") for e in _dataset_errors({**base, "cast": "text2text", "prompt": "Review:"}))
    problems = config_cast_problems("datasets.d", {**base, "cast": "text2text", "label_words": ["a", "b", "c"]})
    assert problems == ["datasets.d.label_words: 3 word(s) for 2 label(s) ['negative', 'positive']"]


def test_hub_rows_and_templates_make_canonical_columns():
    boolq = pd.DataFrame({"question": ["is it"], "passage": ["It is."], "answer": [True]})
    frame = _hub_frame("b", boolq, HUB_DATASETS["boolq"], "hub boolq")
    assert frame.to_dict("records") == [{"text": "Question: is it?\nPassage: It is.", "label": True}]
    wmt = pd.DataFrame({"translation": [{"de": "Hallo", "en": "Hello"}]})
    assert _hub_frame("w", wmt, HUB_DATASETS["wmt14/en-de"], "wmt").to_dict("records") == [
        {"source": "Hello", "target": "Hallo"}]
    tydi = pd.DataFrame({"id": ["swahili-1", "finnish-2"], "question": ["q", "q"], "context": ["c", "c"],
                         "answers": [{"text": ["a", "b"]}, {"text": ["x"]}]})
    assert _hub_frame("t", tydi, HUB_DATASETS["tydiqa/sw"], "tydi")["target"].tolist() == ["a"]
    with pytest.raises(DatasetError, match="names column 'premise'"):
        _hub_frame("x", pd.DataFrame({"text": ["t"], "label": [0]}), HUB_DATASETS["xnli/fr"], "xnli")


def test_seed003_defines_a_complete_25_task_stream():
    cfg = yaml.safe_load((ROOT / "configs" / "seed003.yaml").read_text())
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    for section in ("models", "datasets"):
        errors = list(jsonschema.Draft202012Validator(schema["properties"][section]).iter_errors(cfg[section]))
        assert not errors, [f"{_field(e)}: {e.message}" for e in errors]
    datasets = cfg["datasets"]
    assert len(datasets) == 25
    for name, spec in datasets.items():
        assert spec["source"] == "hub" and spec["hub"] in HUB_DATASETS and spec["cast"] == "text2text", name
        assert HUB_DATASETS[spec["hub"]].task in ("classification", "summarisation"), name
        assert spec["limit"]["train"] == 50000 and not config_cast_problems(f"datasets.{name}", spec), name
    kinds = {HUB_DATASETS[spec["hub"]].task for spec in datasets.values()}
    assert kinds == {"classification", "summarisation"}
