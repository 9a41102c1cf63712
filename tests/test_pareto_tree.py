"""Pareto controller distillation (methods/pareto_tree.py) on the tiny BERT: nested hardened
configurations (physically smaller, the largest the method's own hardening), the unigram
features, the MLP's targets, the depth-3 tree's JSON (<= 1 kB, round trip, `choose` equals
sklearn's predict) and the router."""

import json
import math

import numpy as np
import pytest
import torch

from helpers import default_params, make_run, run_cfg, surrogate, tiny_bert
from wattpeft.methods.gated_lora import GATES_NAME
from wattpeft.methods.pareto_tree import (MAX_TREE_BYTES, UnigramFeatures, adapter_loader, cheapest_agreeing,
                                          choose, distil, distil_tree, dumps_tree, evaluate, loads_tree,
                                          measure_overhead, nested_configurations, nested_masks, pareto_front,
                                          predict_labels, surrogate_cost, train_controller)


def varied_rows(n, seed):
    """Inputs of 3 to 20 tokens, the label in the first token, a skewed token distribution."""
    gen = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        length = int(gen.integers(3, 21))
        ids = (5 + gen.zipf(1.5, length) % 45).tolist()
        ids[0] = 3 + i % 2
        rows.append({"input_ids": ids, "label": i % 2})
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A MetaS-PEFT adapter on the tiny BERT (2 steps), its gates spread over both sides of the
    hardening threshold so that the nested levels differ, saved; its loader."""
    torch.manual_seed(0)  # whatever tests ran before in this session
    method, model, trainer = make_run("metas_peft", run_cfg(max_steps=2))
    trainer.train()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for gate in method.bank.gates().values():
            n = gate.log_alpha.numel()
            gate.log_alpha.copy_(torch.linspace(-3.0, 3.0, n)[torch.randperm(n, generator=gen)].view_as(gate.log_alpha))
        method.bank.layers.log_alpha.copy_(torch.tensor([3.0, 0.5]))
    folder = tmp_path_factory.mktemp("adapter")
    method.save(model, folder)
    return adapter_loader("metas_peft", default_params("metas_peft"), 5.0, folder, tiny_bert)


@pytest.fixture(scope="module")
def configurations(trained):
    return nested_configurations(trained, levels=4, surrogate=surrogate())


@pytest.fixture(scope="module")
def distilled(configurations):
    torch.manual_seed(0)  # the controller MLP's initialisation
    return distil(configurations, varied_rows(96, seed=0), vocab_size=60, pad_id=0, n_inputs=64)


def test_nested_masks_are_nested_and_end_at_the_hardening_rule(trained):
    method, _ = trained()
    levels = nested_masks(method.bank, 4)
    assert len(levels) >= 3 and levels[-1][0] == 1.0
    for (_, _, small), (_, _, large) in zip(levels, levels[1:]):
        assert all((small[k] <= large[k]).all() for k in small) and any((small[k] < large[k]).any() for k in small)
    rule = {kind: gate.hard_mask() for kind, gate in method.bank.gates().items()}
    rule["ranks"] &= method.bank.rank_valid
    assert all(torch.equal(levels[-1][2][k], rule[k]) for k in rule)
    # The rule in P(open): every kept gate is more open than the threshold, every closed one less.
    for kind, gate in method.bank.gates().items():
        p, threshold = gate.expected_open(), levels[-1][1][kind]
        assert (p[gate.hard_mask()] > threshold).all() and (p[~gate.hard_mask()] <= threshold).all()
    # Per kind, the smallest level keeps the most open quarter of what the rule keeps (at least one).
    share, thresholds, mask = levels[0]
    for kind in mask:
        assert int(mask[kind].sum()) == max(1, math.ceil(share * int(rule[kind].sum())))


def test_configurations_are_hardened_models_each_smaller_than_the_next(trained, configurations):
    assert len(configurations) >= 2 and [c.name for c in configurations] == [f"c{i + 1}" for i in
                                                                              range(len(configurations))]
    params = [c.params for c in configurations]
    assert params == sorted(params) and len(set(params)) == len(params)  # physically smaller, strictly
    for small, large in zip(configurations, configurations[1:]):
        assert all(small.open_gates[k] <= large.open_gates[k] for k in small.open_gates)
    for c in configurations:
        assert not hasattr(c.model, GATES_NAME) and set(c.prediction) == {"energy_j", "latency_ms", "peak_power_w"}
        assert c.model.config.num_hidden_layers == c.kept["kept_layers"]
    # The largest is the method's own hardening: what the gated model computes in eval mode.
    method, model = trained()
    batch = {"input_ids": torch.tensor([[3, 7, 9, 11, 5, 8]]), "attention_mask": torch.ones(1, 6, dtype=torch.long)}
    with torch.no_grad():
        expected = model(**batch).logits
        torch.testing.assert_close(configurations[-1].model(**batch).logits, expected, rtol=0, atol=1e-5)
    assert configurations[-1].kept == pytest.approx({k: float(v) for k, v in method.bank.hard_counts().items()})
    # Costed by the method's own cost term of s (the few-step test surrogate need not be monotone).
    cost = surrogate_cost(method, surrogate())
    s = {**configurations[0].kept, "seq_len": method.config.seq_len, "param_bits": method.config.param_bits}
    assert configurations[0].cost == pytest.approx(float(sum(cost.terms(s).values())))


def test_pareto_front_keeps_the_non_dominated_and_the_reference():
    points = [[1, 5, 1], [2, 4, 2], [3, 4, 2], [3, 3, 3], [3, 3, 3], [0.5, 9, 9]]
    # 2 is dominated by 1; 3 equals 4 (the larger is kept); the last is always kept.
    assert pareto_front(points) == [0, 1, 4, 5]
    assert pareto_front([[2.0], [1.0]]) == [1]


def test_unigram_features_are_mean_add_one_surprisal_and_length():
    features = UnigramFeatures.fit([{"input_ids": [1, 1, 2]}, {"input_ids": [1]}], vocab_size=10)
    entropy, position = features([1, 2, 7])
    # N = 4 tokens, V = 10: p(1) = 4/14, p(2) = 2/14, p(7) = 1/14.
    assert entropy == pytest.approx((math.log2(14 / 4) + math.log2(14 / 2) + math.log2(14)) / 3)
    assert position == 3.0
    again = UnigramFeatures.from_json(features.to_json())
    assert again([1, 2, 7]) == features([1, 2, 7])
    with pytest.raises(ValueError, match="without tokens"):
        features([])


def test_the_target_is_the_cheapest_configuration_that_agrees_with_the_largest():
    labels = np.array([[0, 1, 1], [1, 1, 1], [0, 0, 1], [1, 0, 0]])
    assert cheapest_agreeing(labels, [1.0, 2.0, 3.0]).tolist() == [1, 0, 2, 1]
    assert cheapest_agreeing(labels, [2.5, 2.0, 3.0]).tolist() == [1, 1, 2, 1]  # c2 cheaper than c1


def test_distil_keeps_the_pareto_set_and_fits_the_mlp_and_the_tree_on_it(configurations, distilled):
    assert distilled.configurations[-1] is configurations[-1] and configurations[-1].agreement == 1.0
    assert [c.name for c in distilled.configurations] == distilled.train["pareto"]
    assert all(c.pareto == (c in distilled.configurations) for c in configurations)
    # No other is as good in agreement and every metric, and better somewhere; the largest
    # configuration, the reference, is kept whatever (pareto_front's rule).
    for c in distilled.configurations[:-1]:
        for other in configurations:
            if other is not c:
                no_worse = other.agreement >= c.agreement and all(
                    other.prediction[m] <= v for m, v in c.prediction.items())
                better = other.agreement > c.agreement or any(other.prediction[m] < v
                                                              for m, v in c.prediction.items())
                assert not (no_worse and better)
    assert distilled.tree["configs"] == len(distilled.configurations)
    assert distilled.train["inputs"] == 64 and sum(distilled.train["target_share"]) == pytest.approx(1.0)


def test_the_mlp_learns_feature_dependent_targets_and_the_tree_follows_it():
    gen = np.random.default_rng(3)
    x = np.stack([gen.uniform(2, 12, 600), gen.integers(3, 40, 600)], 1).astype(float)
    targets = np.where(x[:, 1] < 15, 0, np.where(x[:, 0] < 7, 1, 2))
    mlp = train_controller(x[:400], targets[:400], 3)
    assert (mlp.choose(x[400:]) == targets[400:]).mean() > 0.9
    tree, _ = distil_tree(x[:400], mlp.choose(x[:400]), 3)
    held = np.array([choose(tree, row) for row in x[400:]])
    assert isinstance(tree["tree"], list) and (held == mlp.choose(x[400:])).mean() > 0.9


def test_the_tree_json_is_small_round_trips_and_choose_is_sklearns_predict(distilled):
    text = dumps_tree(distilled.tree)
    assert len(text.encode()) <= MAX_TREE_BYTES and loads_tree(text) == distilled.tree
    x = np.random.default_rng(1).uniform([0, 1], [10, 25], (500, 2))
    predicted = distilled.classifier.predict(x.astype(np.float32))
    assert [choose(distilled.tree, row) for row in x] == predicted.tolist()
    # A full depth-3 tree over several classes, probed on its own thresholds too.
    gen = np.random.default_rng(2)
    features, classes = gen.normal(size=(400, 2)) * [2.0, 9.0] + [6.0, 20.0], gen.integers(0, 5, 400)
    tree, classifier = distil_tree(features, classes, 5)
    text = dumps_tree(tree)
    assert len(text.encode()) <= MAX_TREE_BYTES and loads_tree(text) == tree == json.loads(text)
    t = classifier.tree_.threshold[classifier.tree_.feature >= 0]
    probes = np.concatenate([features, np.stack([np.repeat(t, 3), np.tile([5.0, 20.0, t.mean()], len(t))], 1),
                             np.stack([np.full(len(t), 6.0), t], 1), np.stack([t, t], 1)])
    assert [choose(tree, row) for row in probes] == classifier.predict(probes.astype(np.float32)).tolist()
    assert choose(tree, {"position": 20.0, "entropy_bits": 6.0}) == choose(tree, [6.0, 20.0])


def test_loads_tree_refuses_what_it_cannot_route():
    base = {"format": "wattpeft.pareto_tree", "version": 1, "features": ["entropy_bits", "position"], "configs": 2}
    deep = [0, 1.0, [0, 2.0, [1, 3.0, [1, 4.0, 0, 1], 0], 1], 1]
    with pytest.raises(ValueError, match="bad tree node"):
        loads_tree(json.dumps({**base, "tree": deep}))
    with pytest.raises(ValueError, match="bad tree leaf 2"):
        loads_tree(json.dumps({**base, "tree": [0, 1.0, 0, 2]}))
    with pytest.raises(ValueError, match="more than 1024"):
        dumps_tree({**base, "tree": 0, "padding": "x" * 1024})


def test_the_router_runs_the_chosen_configuration(distilled):
    rows = varied_rows(40, seed=5)
    router = distilled.router(pad_id=0)
    labels, choices = router.predict(rows, batch_size=8)
    assert set(choices.tolist()) <= set(range(len(distilled.configurations)))
    assert choices.tolist() == [router.route(r["input_ids"]) for r in rows]
    for k, configuration in enumerate(distilled.configurations):
        picked = [i for i in range(len(rows)) if choices[i] == k]
        if picked:
            own = predict_labels(configuration.model, [rows[i] for i in picked], 0, batch_size=3)
            assert labels[picked].tolist() == own.tolist()


def test_evaluate_and_overhead_report_what_the_acceptance_asks(distilled):
    report = evaluate(distilled, varied_rows(40, seed=6), pad_id=0)
    assert 0.0 <= report["fidelity"] <= 1.0 and 0.0 <= report["agreement_with_largest"] <= 1.0
    assert sum(report["choice_share"]) == pytest.approx(1.0)
    assert set(report["routed_predicted"]) == {"energy_j", "latency_ms", "peak_power_w"}
    assert all(r > 0 for r in report["routed_predicted_ratio"].values())
    overhead = measure_overhead(distilled, varied_rows(20, seed=7), repeats=3)
    assert overhead["tree_us_per_token"] > 0 and overhead["tokens"] > 20
