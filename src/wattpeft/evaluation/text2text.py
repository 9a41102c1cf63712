"""Score one text2text split (data/tokenise.py, task "text2text") with a causal LM.

- scoring "label_likelihood" (classification sources): each class's score is the summed
  log-probability of its label word's ids after the prompt; the best class is the
  prediction, scored by accuracy. When every label word is one token, one forward pass over
  the prompts gives every class's score at once (the next-token distribution at each
  prompt's last position), which is exact and what keeps a long task stream cheap; longer
  words are scored prompt + word per class.
- scoring "rouge" (generation sources): greedy decoding from the left-padded prompts, as
  the summarisation evaluation does, then ROUGE-L F1 against `reference`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .evaluate import _generate_summaries, _length_sorted_batches, _pad, _Runner
from .metrics import classification_metrics, rouge_scores

SCORINGS = {"label_likelihood": "accuracy", "rouge": "rougeL"}


def score_split(
    model: nn.Module, rows: Sequence[dict], manifest: dict, *, pad_id: int, batch_size: int = 16,
    max_new_tokens: int = 24, tokenizer: Any = None,
) -> dict[str, Any]:
    """{"metric": "accuracy" | "rougeL", "score": float, "n": rows scored} for one split.

    `rows`: the split as `data.loading.load_split` gives it, or dicts with its columns.
    `tokenizer` decodes generations; by default the one the manifest names.
    """
    scoring = manifest.get("scoring")
    if manifest.get("task") != "text2text" or scoring not in SCORINGS:
        raise ValueError(f"dataset {manifest.get('dataset')!r}: not a text2text manifest with a known "
                         f"scoring (task {manifest.get('task')!r}, scoring {scoring!r}; scorings: {list(SCORINGS)})")
    rows = [rows[i] for i in range(len(rows))]
    if not rows:
        raise ValueError(f"dataset {manifest.get('dataset')!r}: the split is empty, nothing to score")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if scoring == "label_likelihood":
                score = _accuracy(model, rows, manifest, pad_id, batch_size)
            else:
                score = _rouge_l(model, rows, manifest, pad_id, batch_size, max_new_tokens, tokenizer)
    finally:
        model.train(was_training)
    return {"metric": SCORINGS[scoring], "score": score, "n": len(rows)}


# --------------------------------------------------------------------------- label likelihood


def _accuracy(model: nn.Module, rows: list[dict], manifest: dict, pad_id: int, batch_size: int) -> float:
    scores = class_log_likelihoods(model, [row["prompt_ids"] for row in rows], manifest["label_word_ids"],
                                   pad_id, batch_size)
    labels = [int(row["label"]) for row in rows]
    predictions = scores.argmax(-1).tolist()
    return classification_metrics(labels, predictions, manifest["label_names"])["accuracy"]


def class_log_likelihoods(
    model: nn.Module, prompts: Sequence[Sequence[int]], word_ids: Sequence[Sequence[int]], pad_id: int,
    batch_size: int = 16, one_forward: bool | None = None,
) -> torch.Tensor:
    """(rows, classes) summed log p(word_ids[c] | prompt); one forward when every word is one token.

    `one_forward=False` forces the per-class path (to check the fast one against it).
    """
    if one_forward is None:
        one_forward = all(len(ids) == 1 for ids in word_ids)
    runner = _Runner(next(model.parameters()).device, None, False)
    out = torch.empty(len(prompts), len(word_ids))
    for batch in _length_sorted_batches([len(p) for p in prompts], batch_size):
        batch_prompts = [list(prompts[i]) for i in batch]
        if one_forward:
            first_ids = torch.tensor([ids[0] for ids in word_ids])
            out[batch] = _continuation_log_probs(model, batch_prompts, [[]] * len(batch), pad_id, runner,
                                                 next_ids=first_ids)
        else:
            for c, ids in enumerate(word_ids):
                out[batch, c] = _continuation_log_probs(model, batch_prompts, [list(ids)] * len(batch), pad_id,
                                                        runner)
    return out


def _continuation_log_probs(
    model: nn.Module, prompts: list[list[int]], continuations: list[list[int]], pad_id: int, runner: _Runner,
    next_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Summed log p(continuation | prompt) per row, or with `next_ids` log p(each next id | prompt).

    Right padding: a row's positions and attention do not depend on the longer rows beside it.
    """
    sequences = [p + c for p, c in zip(prompts, continuations)]
    input_ids, attention_mask = _pad(sequences, pad_id, "right", runner.device)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    if next_ids is not None:
        last = torch.tensor([len(p) - 1 for p in prompts], device=logits.device)
        rows = torch.arange(len(prompts), device=logits.device)
        return logits[rows, last].float().log_softmax(-1)[:, next_ids.to(logits.device)].cpu()
    totals = []
    for row, (prompt, continuation) in enumerate(zip(prompts, continuations)):
        # Position t predicts token t + 1: the continuation is read from the prompt's last position on.
        positions = torch.arange(len(prompt) - 1, len(prompt) + len(continuation) - 1, device=logits.device)
        log_probs = logits[row, positions].float().log_softmax(-1)
        totals.append(log_probs.gather(-1, torch.tensor(continuation, device=logits.device)[:, None]).sum())
    return torch.stack(totals).cpu()


# --------------------------------------------------------------------------- generation


def _rouge_l(model, rows, manifest, pad_id, batch_size, max_new_tokens, tokenizer) -> float:
    if tokenizer is None:
        from ..models import load_tokenizer

        tokenizer = load_tokenizer(manifest["tokenizer"]["source"])
    runner = _Runner(next(model.parameters()).device, None, False)
    prompts = [list(row["prompt_ids"]) for row in rows]
    predictions = _generate_summaries(model, tokenizer, prompts, pad_id, batch_size, max_new_tokens, runner)
    return rouge_scores(predictions, [str(row["reference"]) for row in rows])["rougeL"]
