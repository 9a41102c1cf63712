"""FW-LoRA: the hook-based Fisher proxy against autograd, the Gram-matrix penalty against
B A, shrinkage ordered by importance, the warm-up schedule, and the probe estimate's error."""

import copy

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from helpers import collate, make_method, make_run, run_cfg, separable_rows
from wattpeft.methods.fisher import choose_form, cost, squared_grad_norm
from wattpeft.methods.fw_lora.model import lora_modules, update_sq_norm

PARAMS = {"alpha": 16, "dropout": 0.0, "fisher_warmup_steps": 3, "shrink_lambda": 1e-2,
          "fisher_estimator": "exact"}


def tiny_bert_without_dropout(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=2, max_position_embeddings=64,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(config)


@pytest.mark.parametrize("rows, form", [(1, "gram"), (8, "direct")])
def test_hook_fisher_equals_autograd_on_an_unfrozen_copy(rows, form):
    """(a) ||dL/dW_m||^2 from hooks equals autograd's weight gradient, in both exact forms."""
    base = tiny_bert_without_dropout()
    unfrozen = copy.deepcopy(base)
    method = make_method("fw_lora", PARAMS, total_steps=10)
    model = method.attach(base)
    batch = collate(separable_rows(rows, length=12))
    model(**batch).loss.backward()
    got = method.hooks.take()
    unfrozen(**batch).loss.backward()
    assert sum(method.hooks.forms.values()) == len(got) == 13
    # Every encoder layer took the expected form (the pooler sees one token per row: gram).
    assert method.hooks.forms[form] >= 12
    for name, value in got.items():
        expected = float(unfrozen.get_submodule(name).weight.grad.square().sum())
        assert expected > 0
        assert value == pytest.approx(expected, rel=1e-5), name
    # The hooks never made a base weight trainable, and never gave it a gradient.
    for module in lora_modules(model).values():
        assert not module.base_layer.weight.requires_grad and module.base_layer.weight.grad is None


def test_gram_penalty_equals_the_one_from_b_a():
    """(b) the r x r Gram form equals lambda * sum (1 - I) ||scaling B A||^2 formed explicitly."""
    method = make_method("fw_lora", PARAMS, total_steps=10)
    model = method.attach(tiny_bert_without_dropout())
    torch.manual_seed(1)
    for module in method.modules.values():
        torch.nn.init.normal_(module.lora_B["default"].weight)
    method.importance = {name: torch.rand(()).item() for name in method.modules}
    explicit = 0.0
    for name, module in method.modules.items():
        delta = module.scaling["default"] * module.lora_B["default"].weight @ module.lora_A["default"].weight
        assert float(update_sq_norm(module)) == pytest.approx(float(delta.square().sum()), rel=1e-5)
        explicit += (1 - method.importance[name]) * float(delta.square().sum())
    assert float(method.extra_loss(model, 5)) == pytest.approx(PARAMS["shrink_lambda"] * explicit, rel=1e-5)


def test_low_importance_updates_shrink_faster():
    """(c) with the importances the warm-up measured and equal starting updates, the
    penalty alone shrinks the least important module's update faster than the most's."""
    method, model, trainer = make_run("fw_lora", run_cfg(max_steps=4, gradient_accumulation_steps=1), params=PARAMS)
    trainer.train()
    ranked = sorted(method.importance, key=method.importance.get)
    low, high = method.modules[ranked[0]], method.modules[ranked[-1]]
    assert method.importance[ranked[0]] < method.importance[ranked[-1]]
    with torch.no_grad():  # the same update in both (shapes allowing)
        for module in (low, high):
            module.lora_A["default"].weight.fill_(0.1)
            module.lora_B["default"].weight.fill_(0.1)
    start = {m: float(update_sq_norm(m)) / m.in_features / m.out_features for m in (low, high)}
    params = [p for m in (low, high) for p in (m.lora_A["default"].weight, m.lora_B["default"].weight)]
    optimizer = torch.optim.SGD(params, lr=0.5)
    for _ in range(20):
        optimizer.zero_grad()
        method.extra_loss(model, 10).backward()
        optimizer.step()
    kept = {m: float(update_sq_norm(m)) / m.in_features / m.out_features / start[m] for m in (low, high)}
    assert kept[low] < kept[high] < 1.0


def test_warm_up_freezes_importance_removes_hooks_and_then_penalises():
    method, model, trainer = make_run("fw_lora", run_cfg(max_steps=6, gradient_accumulation_steps=1), params=PARAMS)
    seen = []
    trainer.on_step_end = lambda step: seen.append((step, method.importance is None, method.hooks.active))
    trainer.train()
    assert seen[:3] == [(1, True, True), (2, True, True), (3, False, False)]
    assert sum(method.importance.values()) == pytest.approx(1.0)
    assert set(method.importance) == set(method.modules)  # one I_m per module, full names
    assert len({round(v, 12) for v in method.importance.values()}) > 1
    assert method.stats["importance"] == method.importance
    assert float(method.extra_loss(model, 7)) > 0


def test_the_forms_are_chosen_by_cost():
    assert choose_form("exact", 10, 384, 384, 16) == "gram"  # 10 tokens: N^2 (in+out) < N in out
    assert choose_form("exact", 480, 384, 384, 16) == "direct"
    assert choose_form("auto", 480, 384, 384, 16) == "probes"
    assert choose_form("auto", 12, 384, 384, 16) == "gram"  # cheaper than 16 probes, and exact
    assert cost("probes", 480, 384, 384, 16) < cost("direct", 480, 384, 384) / 10


def test_the_probe_estimate_is_unbiased_and_its_error_is_as_documented():
    gen = torch.Generator().manual_seed(0)
    x, g = torch.randn(200, 48, generator=gen), torch.randn(200, 40, generator=gen)
    exact = float(squared_grad_norm(x, g, "direct"))
    assert float(squared_grad_norm(x, g, "gram")) == pytest.approx(exact, rel=1e-5)
    draws = torch.tensor([float(squared_grad_norm(x, g, "probes", 16, gen)) for _ in range(400)])
    assert float(draws.mean()) == pytest.approx(exact, rel=0.05)
    assert float(draws.std() / exact) < (2 / 16) ** 0.5  # the bound fisher.py states


def test_a_run_shorter_than_the_warm_up_says_so():
    method = make_method("fw_lora", {**PARAMS, "fisher_warmup_steps": 500}, total_steps=10)
    method.attach(tiny_bert_without_dropout())
    assert method.stats["fisher_warmup_steps"] == 5 and method.stats["fisher_warmup_clamped"]
