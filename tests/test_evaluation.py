"""Evaluation: exact metric values, and evaluate_model on tiny BERT / Llama models built in-test."""

import math

import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from wattpeft.evaluation import (
    classification_metrics,
    evaluate_model,
    latency_percentiles,
    perplexity,
    rouge_scores,
)

WORDS = ["[PAD]", "[UNK]", "</s>", "Summary:"] + [f"w{i}" for i in range(60)]
PAD_ID, EOS_ID, SUMMARY_ID = 0, 2, 3
LATENCY_KEYS = {"latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms",
                "latency_tail_pct", "latency_tail_ms", "latency_samples_n", "latency_distinct_inputs"}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tokenizer():
    """A whitespace WordLevel tokenizer: one word = one token, so token counts are word counts."""
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", eos_token="</s>")


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=2, pad_token_id=PAD_ID,
    )
    return BertForSequenceClassification(config).eval()


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=PAD_ID, bos_token_id=1, eos_token_id=EOS_ID,
    )
    return LlamaForCausalLM(config).eval()


def classification_rows(n=12):
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(3, 12, (n,), generator=generator).tolist()
    return pd.DataFrame({
        "input_ids": [torch.randint(4, len(WORDS), (k,), generator=generator).tolist() for k in lengths],
        "label": [i % 2 for i in range(n)],
        "text": ["" for _ in range(n)],
    })


def summarisation_row(prompt_words: int, summary_words: int, offset: int) -> dict:
    prompt = [4 + (offset + i) % 60 for i in range(prompt_words)] + [SUMMARY_ID]
    summary = [4 + (offset * 7 + i) % 60 for i in range(summary_words)]
    return {
        "prompt_ids": prompt,
        "input_ids": prompt + summary + [EOS_ID],
        "labels": [-100] * len(prompt) + summary + [EOS_ID],
        "reference": " ".join(WORDS[t] for t in summary),
    }


def summarisation_rows(specs):
    return pd.DataFrame([summarisation_row(*spec) for spec in specs])


def quick(**overrides):
    options = {"latency_samples": 2, "progress": False}
    options.update(overrides)
    return options


# ---------------------------------------------------------------- pure metrics


def test_classification_metrics_hand_computed():
    # Class 1: TP=2 FN=1 FP=1 TN=1 -> MCC = (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6;
    # F1(class 1) = 2/3, F1(class 0) = 1/2 -> macro 7/12.
    result = classification_metrics([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], ["neg", "pos"])
    assert result == pytest.approx({"accuracy": 0.6, "mcc": 1 / 6, "macro_f1": 7 / 12})


def test_classification_metrics_perfect_and_constant_prediction():
    assert classification_metrics([0, 1, 2], [0, 1, 2], ["a", "b", "c"]) == pytest.approx(
        {"accuracy": 1.0, "mcc": 1.0, "macro_f1": 1.0}
    )
    # A constant prediction has undefined MCC: scikit-learn reports 0, not NaN.
    assert classification_metrics([0, 1, 1, 0], [1, 1, 1, 1])["mcc"] == 0.0


@pytest.mark.parametrize(
    ("y_true", "y_pred", "names", "message"),
    [
        ([], [], None, "empty"),
        ([0, 1], [0], None, "pair up"),
        ([0, 2], [0, 1], ["a", "b"], "outside"),
    ],
)
def test_classification_metrics_rejects_bad_input(y_true, y_pred, names, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(y_true, y_pred, names)


def test_rouge_identical_disjoint_and_partial():
    assert rouge_scores(["the cat sat"], ["the cat sat"]) == pytest.approx({"rouge1": 1, "rouge2": 1, "rougeL": 1})
    assert rouge_scores(["dogs bark loudly"], ["the cat sat"]) == pytest.approx({"rouge1": 0, "rouge2": 0, "rougeL": 0})
    # 3 of 6 reference unigrams, 2 of 5 reference bigrams, LCS 3, all predicted n-grams match:
    # rouge1 = rougeL = 2*1*0.5/1.5 = 2/3, rouge2 = 2*1*0.4/1.4 = 4/7.
    partial = rouge_scores(["the cat sat"], ["the cat sat on the mat"])
    assert partial == pytest.approx({"rouge1": 2 / 3, "rouge2": 4 / 7, "rougeL": 2 / 3})
    # Mean over pairs; the Porter stemmer maps "cats" to "cat" without any nltk download.
    assert rouge_scores(["cats", "x"], ["cat", "y"])["rouge1"] == pytest.approx(0.5)


def test_rouge_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="pair up"):
        rouge_scores(["a", "b"], ["a"])


def test_latency_percentiles_known_list():
    result = latency_percentiles([0.004, 0.001, 0.003, 0.002])
    # Linear interpolation on sorted [1, 2, 3, 4] ms: p50 at rank 1.5. Four passes support
    # no tail percentile beyond the median: p90/p95/p99 are NaN, never the sample maximum.
    assert result["latency_p50_ms"] == pytest.approx(2.5)
    assert result["latency_mean_ms"] == pytest.approx(2.5)
    assert all(math.isnan(result[f"latency_p{p}_ms"]) for p in (90, 95, 99))
    assert (result["latency_n"], result["latency_tail_pct"], result["latency_tail_ms"]) == (4, 50.0, 2.5)
    with pytest.raises(ValueError, match="empty"):
        latency_percentiles([])


def test_p99_needs_100_passes_and_smaller_samples_report_what_they_support():
    twenty = latency_percentiles([i / 1000 for i in range(1, 21)])
    assert math.isnan(twenty["latency_p99_ms"]) and twenty["latency_tail_pct"] == 95.0
    assert twenty["latency_p95_ms"] == pytest.approx(19.05)
    hundred = latency_percentiles([i / 1000 for i in range(1, 101)])
    assert hundred["latency_p99_ms"] == pytest.approx(99.01) and hundred["latency_tail_pct"] == 99.0
    assert math.isnan(latency_percentiles([0.001] * 99)["latency_p99_ms"])


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(7.0)) == pytest.approx(7.0)
    assert perplexity(1e4) == math.inf
    with pytest.raises(ValueError, match="NaN"):
        perplexity(float("nan"))


# ---------------------------------------------------------------- classification


def test_classification_evaluation_is_complete_and_deterministic(bert, tokenizer):
    rows = classification_rows()
    first = evaluate_model(bert, tokenizer, rows, "classification", batch_size=5, **quick())
    second = evaluate_model(bert, tokenizer, rows, "classification", batch_size=5, **quick())
    metrics = first["metrics"]
    assert set(metrics) == {"accuracy", "mcc", "macro_f1", "eval_loss"} | LATENCY_KEYS
    assert 0.0 <= metrics["accuracy"] <= 1.0 and -1.0 <= metrics["mcc"] <= 1.0
    assert metrics["eval_loss"] > 0 and metrics["latency_samples_n"] == 2
    assert first["predictions"] == second["predictions"]
    for key in ("accuracy", "mcc", "macro_f1", "eval_loss"):
        assert metrics[key] == second["metrics"][key]
    assert [p["label"] for p in first["predictions"]] == rows["label"].tolist()


def test_classification_padding_does_not_change_predictions(bert, tokenizer):
    rows = classification_rows()
    batched = evaluate_model(bert, tokenizer, rows, "classification", batch_size=12, **quick(latency_samples=0))
    single = evaluate_model(bert, tokenizer, rows, "classification", batch_size=1, **quick(latency_samples=0))
    assert batched["predictions"] == single["predictions"]
    assert batched["metrics"]["eval_loss"] == pytest.approx(single["metrics"]["eval_loss"], abs=1e-5)
    assert batched["metrics"]["latency_samples_n"] == 0


def test_nan_logits_raise_clear_error(tokenizer):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=2)
    broken = BertForSequenceClassification(config)
    with torch.no_grad():
        broken.classifier.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite logits"):
        evaluate_model(broken, tokenizer, classification_rows(4), "classification", **quick())


def test_missing_columns_are_named(bert, tokenizer):
    with pytest.raises(ValueError, match="label"):
        evaluate_model(bert, tokenizer, classification_rows().drop(columns="label"), "classification", **quick())


# ---------------------------------------------------------------- summarisation and lm


def test_summarisation_metrics_and_length_limit(llama, tokenizer):
    rows = summarisation_rows([(5, 4, 0), (9, 3, 1), (2, 6, 2)])
    max_new_tokens = 5
    result = evaluate_model(llama, tokenizer, rows, "summarisation", max_new_tokens=max_new_tokens, **quick())
    metrics = result["metrics"]
    expected = {"rouge1", "rouge2", "rougeL", "eval_loss", "perplexity", "eval_tokens", "latency_per_token_ms"}
    assert set(metrics) == expected | LATENCY_KEYS
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("rouge1", "rouge2", "rougeL"))
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    assert metrics["eval_tokens"] == sum(len(s) for s in rows["labels"]) - sum(len(p) for p in rows["prompt_ids"])
    assert [p["reference"] for p in result["predictions"]] == rows["reference"].tolist()
    for prediction in result["predictions"]:
        assert len(tokenizer(prediction["prediction"])["input_ids"]) <= max_new_tokens
    # The random model must say something, or the padding test below would prove nothing.
    assert any(p["prediction"] for p in result["predictions"])


def test_left_padding_matches_unbatched_greedy_output(llama, tokenizer):
    short, long = (3, 4, 5), (14, 4, 6)
    alone = evaluate_model(llama, tokenizer, summarisation_rows([short]), "summarisation", max_new_tokens=8,
                           **quick(latency_samples=0))
    batched = evaluate_model(llama, tokenizer, summarisation_rows([short, long]), "summarisation",
                             batch_size=2, max_new_tokens=8, **quick(latency_samples=0))
    assert alone["predictions"][0]["prediction"] != ""
    assert batched["predictions"][0]["prediction"] == alone["predictions"][0]["prediction"]


def test_teacher_forced_loss_is_token_weighted_mean(llama, tokenizer):
    rows = summarisation_rows([(4, 2, 0), (10, 7, 3)])
    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for input_ids, labels in zip(rows["input_ids"], rows["labels"]):
            # Labels are aligned with input_ids (the model shifts them); position 0 is a prompt token.
            n_targets = sum(label != -100 for label in labels)
            loss = llama(input_ids=torch.tensor([input_ids]), labels=torch.tensor([labels])).loss.item()
            total_nll += loss * n_targets
            total_tokens += n_targets
    options = quick(latency_samples=0, batch_size=2, max_new_tokens=2)
    for task in ("summarisation", "lm"):  # lm takes the labels column when there is one
        metrics = evaluate_model(llama, tokenizer, rows, task, **options)["metrics"]
        assert metrics["eval_loss"] == pytest.approx(total_nll / total_tokens, rel=1e-5)
        assert metrics["eval_tokens"] == total_tokens


def test_lm_task_uses_every_token_without_labels(llama, tokenizer):
    rows = pd.DataFrame({"input_ids": [[4, 5, 6, 7], [8, 9, 10]]})
    result = evaluate_model(llama, tokenizer, rows, "lm", **quick())
    # Each sequence of length k predicts k - 1 next tokens.
    assert result["metrics"]["eval_tokens"] == 3 + 2
    assert result["metrics"]["perplexity"] == pytest.approx(math.exp(result["metrics"]["eval_loss"]))
    assert set(result["metrics"]) == {"eval_loss", "perplexity", "eval_tokens"} | LATENCY_KEYS


def test_fp16_autocast_on_cpu_is_refused(llama, tokenizer):
    rows = pd.DataFrame({"input_ids": [[4, 5, 6]]})
    with pytest.raises(ValueError, match="float16"):
        evaluate_model(llama, tokenizer, rows, "lm", autocast_dtype=torch.float16, **quick())
