"""Evaluate a (PEFT-adapted) Hugging Face model on tokenised rows: quality, loss and latency.

Rows are the tokenised parquet tables of the data stage:
- classification: `input_ids`, `label` (and `text`, unused here);
- summarisation (decoder-only LM): `prompt_ids` (ends in "Summary:"), `input_ids`, `labels`
  (same length as `input_ids`, prompt positions -100; the model shifts them, as in HF), `reference`;
- lm: `input_ids` (and optionally `labels`; otherwise every token is a target).

Batches are formed from rows sorted by length (less padding, longest first so an
out-of-memory shows up at once) and results are put back in row order.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.loading import IGNORE_INDEX, attention_mask, pad_sequences
from .metrics import classification_metrics, latency_percentiles, perplexity, rouge_scores

TASKS = ("classification", "summarisation", "lm")
REQUIRED_COLUMNS = {
    "classification": ("input_ids", "label"),
    "summarisation": ("prompt_ids", "input_ids", "labels", "reference"),
    "lm": ("input_ids",),
}
WARMUP_CALLS = 2


@dataclass(frozen=True)
class _Runner:
    """Where and how forward passes run: device, optional autocast, progress bars."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    progress: bool

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def synchronize(self) -> None:
        # CUDA kernels run asynchronously: without this a timer measures only the launch.
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def bar(self, total: int, desc: str) -> tqdm:
        return tqdm(total=total, desc=desc, unit="row", disable=not self.progress, leave=False)


def evaluate_model(
    model,
    tokenizer,
    rows: pd.DataFrame,
    task: str,
    *,
    label_names: Sequence[str] | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 40,
    latency_samples: int = 32,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | str | None = None,
    progress: bool = True,
    summaries_kept: int = 32,
    latency_workload: str = "auto",
) -> dict:
    """Evaluate `model` (already on `device`) on `rows`; returns {"metrics": dict, "predictions": list}.

    Predictions: classification keeps every row as {"label", "prediction"} (ids, small,
    enough for paired significance tests); summarisation keeps {"reference", "prediction"}
    for the first `summaries_kept` rows so a person can read them; lm keeps none.
    Latency times `latency_workload`: "generate" (whole length-limited generations),
    "forward" (one prefill pass), or "auto" (generate for summarisation, else forward).
    The model's train/eval mode is restored afterwards.
    """
    _check_arguments(rows, task, batch_size, max_new_tokens, latency_samples)
    runner = _Runner(torch.device(device), _resolve_autocast(device, autocast_dtype), progress)
    pad_id = _pad_token_id(tokenizer)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if task == "classification":
                names = list(label_names) if label_names is not None else _model_label_names(model)
                metrics, predictions = _evaluate_classification(model, rows, names, pad_id, batch_size, runner)
            elif task == "summarisation":
                metrics, predictions = _evaluate_summarisation(
                    model, tokenizer, rows, pad_id, batch_size, max_new_tokens, runner, summaries_kept
                )
            else:
                metrics, predictions = _evaluate_lm(model, rows, pad_id, batch_size, runner), []
            metrics.update(
                _measure_latency(model, tokenizer, rows, task, pad_id, latency_samples, max_new_tokens, runner,
                                 generates(task, latency_workload))
            )
    finally:
        model.train(was_training)
    return {"metrics": metrics, "predictions": predictions}


# ---------------------------------------------------------------- argument checks


def _check_arguments(rows: pd.DataFrame, task: str, batch_size: int, max_new_tokens: int, latency_samples: int):
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if len(rows) == 0:
        raise ValueError(f"no rows to evaluate for task {task!r}")
    missing = [column for column in REQUIRED_COLUMNS[task] if column not in rows.columns]
    if missing:
        raise ValueError(f"task {task!r} needs columns {missing}; rows have {list(rows.columns)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if latency_samples < 0:
        raise ValueError(f"latency_samples must be >= 0, got {latency_samples}")


def _resolve_autocast(device: str | torch.device, dtype: torch.dtype | str | None) -> torch.dtype | None:
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."))
    if dtype == torch.float16 and torch.device(device).type == "cpu":
        raise ValueError("float16 autocast on CPU is slow and numerically unsafe; use bfloat16 or None")
    return dtype


def _pad_token_id(tokenizer) -> int:
    # Llama-style tokenizers have no pad token; padded positions are masked, so eos serves.
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    raise ValueError("the tokenizer has neither a pad nor an eos token id: cannot pad batches")


def _eos_token_ids(model, tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return sorted(int(i) for i in ids if i is not None)


def _model_label_names(model) -> list[str]:
    num_labels = int(model.config.num_labels)
    id2label = getattr(model.config, "id2label", None) or {}
    return [str(id2label.get(i, i)) for i in range(num_labels)]


# ---------------------------------------------------------------- batching helpers


def _id_lists(column: pd.Series, name: str) -> list[list[int]]:
    # Parquet gives numpy arrays; plain lists of ints keep torch.tensor fast and exact.
    sequences = [[int(token) for token in value] for value in column]
    empty = [i for i, sequence in enumerate(sequences) if not sequence]
    if empty:
        raise ValueError(f"column {name!r} has empty sequences at rows {empty[:10]}")
    return sequences


def _length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def _pad(sequences: Sequence[Sequence[int]], pad_value: int, side: str, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence; returns (ids, attention_mask) as long tensors on `device`."""
    ids = pad_sequences(sequences, pad_value, side)
    return ids.to(device), attention_mask(sequences, side).to(device)


def _check_finite(logits: torch.Tensor, where: str) -> None:
    if not torch.isfinite(logits).all():
        raise FloatingPointError(
            f"non-finite logits in {where}: the model or its adapter produced NaN/inf "
            "(diverged training, an overflowing dtype, or a broken quantised export)"
        )


# ---------------------------------------------------------------- classification


def _evaluate_classification(model, rows, label_names, pad_id, batch_size, runner) -> tuple[dict, list]:
    sequences = _id_lists(rows["input_ids"], "input_ids")
    labels = [int(label) for label in rows["label"]]
    bad = sorted({label for label in labels if not 0 <= label < len(label_names)})
    if bad:
        raise ValueError(f"labels {bad} fall outside the {len(label_names)} label names {label_names}")
    predicted = [0] * len(labels)
    loss_sum = 0.0
    with runner.bar(len(labels), "classify") as bar:
        for batch in _length_sorted_batches([len(s) for s in sequences], batch_size):
            logits = _classification_logits(model, [sequences[i] for i in batch], pad_id, runner)
            if logits.shape[-1] != len(label_names):
                raise ValueError(
                    f"model outputs {logits.shape[-1]} classes but there are {len(label_names)} label names"
                )
            targets = torch.tensor([labels[i] for i in batch], device=logits.device)
            loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
            for index, prediction in zip(batch, logits.argmax(dim=-1).tolist()):
                predicted[index] = prediction
            bar.update(len(batch))
    metrics = classification_metrics(labels, predicted, label_names)
    metrics["eval_loss"] = loss_sum / len(labels)
    return metrics, [{"label": y, "prediction": p} for y, p in zip(labels, predicted)]


def _classification_logits(model, sequences, pad_id, runner) -> torch.Tensor:
    input_ids, attention_mask = _pad(sequences, pad_id, "right", runner.device)
    with runner.autocast():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    _check_finite(logits, "classification forward pass")
    return logits


# ---------------------------------------------------------------- teacher-forced loss (summarisation, lm)


def _token_nll_metrics(model, inputs, targets, pad_id, batch_size, runner, desc) -> dict:
    """Mean next-token NLL over every target token (not a mean of per-batch means) and its perplexity."""
    nll_sum, n_tokens = 0.0, 0
    with runner.bar(len(inputs), desc) as bar:
        for batch in _length_sorted_batches([len(s) for s in inputs], batch_size):
            batch_nll, batch_tokens = _batch_token_nll(
                model, [inputs[i] for i in batch], [targets[i] for i in batch], pad_id, runner
            )
            nll_sum += batch_nll
            n_tokens += batch_tokens
            bar.update(len(batch))
    if n_tokens == 0:
        raise ValueError("no target tokens: every label is -100, so there is no loss to measure")
    mean_nll = nll_sum / n_tokens
    return {"eval_loss": mean_nll, "perplexity": perplexity(mean_nll), "eval_tokens": n_tokens}


def _batch_token_nll(model, inputs, targets, pad_id, runner) -> tuple[float, int]:
    input_ids, attention_mask = _pad(inputs, pad_id, "right", runner.device)
    labels, _ = _pad(targets, IGNORE_INDEX, "right", runner.device)
    with runner.autocast():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    # Position t predicts token t+1; keep only target positions before going to float32,
    # which bounds memory by the number of target tokens rather than the full vocab grid.
    shifted_labels = labels[:, 1:]
    is_target = shifted_labels != IGNORE_INDEX
    target_logits = logits[:, :-1][is_target].float()
    _check_finite(target_logits, "teacher-forced forward pass")
    nll = F.cross_entropy(target_logits, shifted_labels[is_target], reduction="sum")
    return nll.item(), int(is_target.sum().item())


def _evaluate_lm(model, rows, pad_id, batch_size, runner) -> dict:
    inputs = _id_lists(rows["input_ids"], "input_ids")
    targets = _id_lists(rows["labels"], "labels") if "labels" in rows.columns else inputs
    _check_same_lengths(inputs, targets)
    return _token_nll_metrics(model, inputs, targets, pad_id, batch_size, runner, "lm loss")


def _check_same_lengths(inputs, targets) -> None:
    mismatched = [i for i, (x, y) in enumerate(zip(inputs, targets)) if len(x) != len(y)]
    if mismatched:
        raise ValueError(f"input_ids and labels differ in length at rows {mismatched[:10]}")


# ---------------------------------------------------------------- summarisation


def _evaluate_summarisation(
    model, tokenizer, rows, pad_id, batch_size, max_new_tokens, runner, summaries_kept
) -> tuple[dict, list]:
    inputs = _id_lists(rows["input_ids"], "input_ids")
    targets = _id_lists(rows["labels"], "labels")
    _check_same_lengths(inputs, targets)
    # The cheap loss pass runs first so that NaN logits fail fast, before slow generation.
    metrics = _token_nll_metrics(model, inputs, targets, pad_id, batch_size, runner, "summary loss")
    prompts = _id_lists(rows["prompt_ids"], "prompt_ids")
    summaries = _generate_summaries(model, tokenizer, prompts, pad_id, batch_size, max_new_tokens, runner)
    references = [str(reference) for reference in rows["reference"]]
    metrics.update(rouge_scores(summaries, references))
    kept = [{"reference": r, "prediction": p} for r, p in zip(references[:summaries_kept], summaries[:summaries_kept])]
    return metrics, kept


def _generate_summaries(model, tokenizer, prompts, pad_id, batch_size, max_new_tokens, runner) -> list[str]:
    """Greedy, length-limited generation from left-padded prompt batches; one cleaned string per prompt."""
    eos_ids = _eos_token_ids(model, tokenizer)
    summaries = [""] * len(prompts)
    with runner.bar(len(prompts), "generate") as bar:
        for batch in _length_sorted_batches([len(p) for p in prompts], batch_size):
            # Left padding puts every prompt's last token in the same final column, so the
            # new tokens of every row start at the same offset; the attention mask (and the
            # position ids generate derives from it) hides the padding from the model.
            input_ids, attention_mask = _pad([prompts[i] for i in batch], pad_id, "left", runner.device)
            new_tokens = _greedy_new_tokens(model, input_ids, attention_mask, pad_id, eos_ids, max_new_tokens, runner)
            for index, tokens in zip(batch, new_tokens.tolist()):
                summaries[index] = _clean_summary(tokenizer, tokens, eos_ids)
            bar.update(len(batch))
    return summaries


def _greedy_new_tokens(model, input_ids, attention_mask, pad_id, eos_ids, max_new_tokens, runner) -> torch.Tensor:
    with runner.autocast():
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad_id,
            eos_token_id=eos_ids or None,
        )
    return output[:, input_ids.shape[1] :]


def _clean_summary(tokenizer, tokens: list[int], eos_ids: list[int]) -> str:
    """Cut at the first eos (finished rows are padded after it), decode, keep the first line."""
    end = next((position for position, token in enumerate(tokens) if token in eos_ids), len(tokens))
    text = tokenizer.decode(tokens[:end], skip_special_tokens=True)
    return text.strip().split("\n", 1)[0].strip()


# ---------------------------------------------------------------- latency


LATENCY_WORKLOADS = ("auto", "forward", "generate")


def generates(task: str, workload: str) -> bool:
    """Whether the timed unit is a whole generation (else one forward pass)."""
    if workload not in LATENCY_WORKLOADS:
        raise ValueError(f"latency_workload must be one of {LATENCY_WORKLOADS}, got {workload!r}")
    if workload == "generate" and task != "summarisation":
        raise ValueError(f"latency_workload generate needs a summarisation task, not {task!r}")
    return task == "summarisation" and workload != "forward"


def _measure_latency(model, tokenizer, rows, task, pad_id, latency_samples, max_new_tokens, runner,
                     generate: bool) -> dict:
    """Per-sample latency at batch size 1: `latency_samples` timed passes after warm-up calls,
    cycling over the first rows when there are fewer rows than passes. Percentiles the
    number of passes cannot support are null (p99 needs 100; see utils/latency.py)."""
    if latency_samples == 0:
        return {"latency_samples_n": 0}
    column = "prompt_ids" if task == "summarisation" else "input_ids"
    samples = _id_lists(rows[column].iloc[:latency_samples], column)
    inputs = [_pad([sample], pad_id, "right", runner.device) for sample in samples]
    passes = [inputs[i % len(inputs)] for i in range(latency_samples)]
    call = _latency_call(model, tokenizer, generate, pad_id, max_new_tokens, runner)
    for warmup in range(WARMUP_CALLS):
        call(*inputs[warmup % len(inputs)])
    seconds, new_tokens = [], []
    with runner.bar(latency_samples, "latency") as bar:
        for input_ids, attention_mask in passes:
            runner.synchronize()
            start = time.perf_counter()
            new_tokens.append(call(input_ids, attention_mask))
            runner.synchronize()
            seconds.append(time.perf_counter() - start)
            bar.update(1)
    metrics = latency_percentiles(seconds)
    metrics["latency_samples_n"] = metrics.pop("latency_n")
    metrics["latency_distinct_inputs"] = len(inputs)
    if generate:
        # Whole generate calls (prefill included) divided by the tokens they produced.
        metrics["latency_per_token_ms"] = 1000.0 * sum(seconds) / max(sum(new_tokens), 1)
    return metrics


def _latency_call(model, tokenizer, generate, pad_id, max_new_tokens, runner):
    """One timed unit of work; returns how many new tokens it generated (0 for a forward pass)."""
    if not generate:

        def forward(input_ids, attention_mask) -> int:
            with runner.autocast():
                model(input_ids=input_ids, attention_mask=attention_mask)
            return 0

        return forward
    eos_ids = _eos_token_ids(model, tokenizer)

    def generate(input_ids, attention_mask) -> int:
        return _greedy_new_tokens(model, input_ids, attention_mask, pad_id, eos_ids, max_new_tokens, runner).shape[1]

    return generate
