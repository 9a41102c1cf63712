"""Pareto controller distillation (seed 002, part D) for the gated LoRA methods (MetaS-PEFT
first of all): per input, a depth-3 decision tree over two features of the input picks one of
K physically hardened gate configurations, and that configuration's model runs.

A library and a benchmark (bench/pareto_tree.py); the Snakemake pipeline does not run it.

1. The nested configurations (`nested_configurations`). From a trained gated model with its
   soft gates (before hardening): every gate's P(open) (`HardConcreteGate.expected_open`;
   ranks a module does not have left out). The largest configuration c_K is the method's own
   hardening rule (a gate kept iff its deterministic gate is > 0, hard_concrete.py); c_k
   (k < K) keeps, of each kind's gates (layers, heads, ranks) that c_K keeps, those whose
   P(open) is at least that of the ceil(k/K x n)-th most open of them (n of that kind, at
   least one kept), so c_1 ⊂ c_2 ⊂ ... ⊂ c_K (a level that keeps the same gates as the next
   one is dropped). The levels are per kind because the cost moves the kinds at different
   rates: with one threshold over all gates pooled, the three smaller levels of a MetaS-PEFT
   MiniLM (40 steps) kept no layer at all (the layer gates were the least open), leaving no
   usable middle. Each configuration is a fresh
   copy of the trained model (`load()`), its gates outside the configuration closed
   (log_alpha = -10: deterministic gate 0), hardened by the method (`harden`: closed layers,
   heads and ranks removed through methods/pruning.py, kept gates folded in): K real, smaller
   models, never a mask. Each is costed by the method's cost model at the method's deployment
   setting (`seq_len`, `param_bits`): for MetaS-PEFT the calibrated meta-surrogate's
   (E, L, P) on the target device (`surrogate_cost`).
   The Pareto set (`distil`): a configuration's quality is its agreement with c_K, the share
   of the N training inputs on which its label is c_K's; configurations dominated in
   (quality, E, L, P) (another is as good in every one and better in one, or the same and
   larger) are dropped; c_K is always kept (the reference). By cost alone a nested chain is
   ordered (with a monotone surrogate the smallest is the cheapest in every metric, and only
   it would survive): the quality axis is what makes it a front. With nesting, mostly none is
   dropped. "Cheaper" below means a lower scalarised cost, the method's own cost term of s
   (MetaS-PEFT: lambda E / E_budget + mu L / L_budget + nu P / P_budget), ties to the smaller
   configuration.

2. The features of an input (`UnigramFeatures`), two numbers per input, because a sequence
   classifier takes one decision per input (not per token):
   - `entropy_bits`: the mean unigram surprisal of the input's tokens in bits,
     mean_t -log2 p(t), p(t) = (count(t) + 1) / (N + V): token counts over the training
     split's inputs (N tokens in all), add-one smoothed over the vocabulary (V ids);
   - `position`: the input's length in tokens (the position of its last token).
   Tokens are the input ids the model receives (special tokens included, no padding). The
   unigram table (the counts of the ids seen in training, JSON) belongs to the feature
   extractor and is stored apart from the tree (`UnigramFeatures.to_json`; about 24 kB for
   the 2,593 ids of the Rotten Tomatoes training split under MiniLM's tokenizer).

3. The MLP controller (`ControllerMLP`): standardised features -> Linear(2, 16) -> ReLU ->
   Linear(16, K) logits, trained (full-batch Adam, cross-entropy, seeded) on `n_inputs`
   training inputs (default 512, fewer when the split is smaller) to pick, for each input,
   the cheapest configuration whose predicted label equals c_K's (`cheapest_agreeing`); the
   labels come from running every hardened configuration on those inputs. A configuration
   that has collapsed (one label for every input: agreement near the share of c_K's majority
   label) is the cheapest agreeing one on every input whose c_K label happens to be that
   label, and the target then is c_K's label more than anything about the input;
   `min_agreement` (default 0: as specified) leaves configurations below that agreement out
   of the Pareto set, and the benchmark reports both.

4. The tree (`distil_tree`): sklearn's DecisionTreeClassifier(max_depth=3) fitted on the
   MLP's choices over the same inputs, exported as JSON (no pickle), at most 1024 bytes
   (`dumps_tree` refuses more):

       {"format": "wattpeft.pareto_tree", "version": 1, "features": ["entropy_bits", "position"],
        "configs": K, "tree": NODE}

   where NODE is a leaf, the index of a configuration of the Pareto set (0 the smallest kept,
   K - 1 = c_K, K now counting the kept ones), or [feature index, threshold, NODE if
   x <= threshold, NODE otherwise]; a split whose two sides are the same is written as that
   side. `choose(tree, features)` walks it in pure Python; features are rounded to float32
   first, as sklearn's `predict` does, so that `choose` gives sklearn's answer exactly. A
   depth-3 tree has at most 7 splits: about 100 bytes of header and 25 to 40 per split.

5. Inference (`ParetoRouter`): the K hardened models, the feature extractor and the tree;
   per input: features, `choose`, then that configuration's model (inputs batched by their
   configuration). `evaluate` reports on held-out inputs: fidelity (share where the tree's
   choice is the MLP's), accuracy of the routed predictions and of every configuration
   (task labels), agreement of the routed labels with c_K's, the share routed to each
   configuration, and the mean predicted cost metrics of the routed choices against c_K's.
   `measure_overhead`: (feature extraction + tree) time per token and per input, one thread,
   measured over the inputs, with the MLP's time per input for comparison.

What this is not: the seed's "sample 2k random inputs" is the training split here (N inputs);
the configurations are costed at the deployment `seq_len`, not at each input's length; no
hypervolume is computed. Classification only (one label per input).
"""

from __future__ import annotations

import json
import math
import statistics
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .base import count_params
from .gated_lora import GateBank, GatedLoraMethod, SurrogateCost

FEATURES = ("entropy_bits", "position")
TREE_FORMAT, UNIGRAM_FORMAT, VERSION = "wattpeft.pareto_tree", "wattpeft.unigram", 1
MAX_TREE_BYTES = 1024
MAX_DEPTH = 3
CLOSED = -10.0  # log_alpha of a gate closed for a configuration: deterministic gate exactly 0

Loader = Callable[[], tuple[GatedLoraMethod, nn.Module]]


# ---------------------------------------------------------------- 1. nested configurations


@dataclass
class Configuration:
    """One hardened configuration of the Pareto set."""

    name: str
    share: float  # share of the hardening rule's kept gates kept here (1.0: c_K)
    threshold: dict[str, float]  # per kind, the P(open) a gate needs (c_K: the hardening rule's)
    open_gates: dict[str, int]  # gates kept, per kind
    kept: dict[str, float]  # s's kept_layers, kept_heads, kept_ranks (the hardened counts)
    prediction: dict[str, float]  # the cost model's metrics at the deployment setting
    cost: float  # the method's scalarised cost term of s
    params: int  # parameters of the hardened model
    model: nn.Module = field(repr=False)
    agreement: float | None = None  # share of the training inputs labelled as c_K labels them (`distil`)
    pareto: bool | None = None  # kept in the Pareto set (`distil`)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "share": self.share, "threshold": self.threshold, "open_gates": self.open_gates,
                "kept": self.kept, "prediction": self.prediction, "cost": self.cost, "params": self.params,
                "agreement": self.agreement, "pareto": self.pareto}


def gate_masks(bank: GateBank) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """({kind: P(open)}, {kind: kept by the hardening rule}); ranks a module lacks are never kept."""
    probs, rule = {}, {}
    for kind, gate in bank.gates().items():
        probs[kind] = gate.expected_open().detach()
        rule[kind] = gate.hard_mask() & bank.rank_valid if kind == "ranks" else gate.hard_mask()
    return probs, rule


def rule_probability(bank: GateBank) -> float:
    """The hardening rule in P(open): deterministic gate > 0 iff P(open) > this."""
    gate = bank.layers
    log_alpha = -math.log(gate.high / -gate.low)
    return 1.0 / (1.0 + math.exp(-(log_alpha - gate.temperature * math.log(-gate.low / gate.high))))


def nested_masks(bank: GateBank, levels: int) -> list[tuple[float, dict[str, float], dict[str, torch.Tensor]]]:
    """[(share, {kind: P(open) threshold}, {kind: keep mask})], smallest first, the last the
    hardening rule's. Level k (share k / levels) keeps, of each kind's gates the rule keeps, those
    with P(open) >= the ceil(share x n)-th largest of them (at least one). Levels that keep
    what the next keeps are dropped."""
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    probs, rule = gate_masks(bank)
    ordered = {k: probs[k][rule[k]].sort(descending=True).values for k in probs}
    out: list[tuple[float, dict[str, float], dict[str, torch.Tensor]]] = []
    for level in range(1, levels + 1):
        share = level / levels
        thresholds, mask = {}, {}
        for kind, values in ordered.items():
            if level == levels or not len(values):
                thresholds[kind], mask[kind] = rule_probability(bank), rule[kind]
            else:
                thresholds[kind] = float(values[max(1, math.ceil(share * len(values))) - 1])
                mask[kind] = rule[kind] & (probs[kind] >= thresholds[kind])
        if out and all(torch.equal(out[-1][2][k], mask[k]) for k in mask):
            out.pop()  # the same gates as the smaller level: keep the larger level's name
        out.append((share, thresholds, mask))
    return out


def close_gates(bank: GateBank, mask: Mapping[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for kind, gate in bank.gates().items():
            gate.log_alpha[~mask[kind].to(gate.log_alpha.device)] = CLOSED


def surrogate_cost(method: GatedLoraMethod, surrogate) -> SurrogateCost:
    """MetaS-PEFT's cost (the calibrated meta-surrogate's E, L, P on the method's target
    device) for a method that was loaded, not attached (`load` builds no cost model).
    `surrogate`: (MetaSurrogate, calibration), as surrogate.load_surrogate returns."""
    anat = method.anatomy
    layers = len(method.bank.layers.log_alpha)
    ranks = [m.rank for m in method.modules.values()]
    full = method.stats.get("full_configuration") or {
        "seq_len": method.config.seq_len, "kept_layers": layers, "kept_heads": anat.heads,
        "kept_ranks": sum(ranks) / len(ranks), "param_bits": method.config.param_bits}
    return SurrogateCost(surrogate, method.config, layers, anat.heads, full)


def adapter_loader(method_name: str, params: Mapping[str, Any], budget: float, adapter_dir: str | Path,
                   backbone: Callable[[], nn.Module], task: str = "classification") -> Loader:
    """load(): (method, gated model in eval mode) from a saved adapter (`method.save`) on a
    fresh `backbone()`, the trained soft gates included; `params` and `budget` as trained."""
    from . import get_method

    def load() -> tuple[GatedLoraMethod, nn.Module]:
        method = get_method(method_name)(dict(params), budget, task, 1, {})
        if not isinstance(method, GatedLoraMethod):
            raise ValueError(f"pareto_tree: {method_name} is no gated LoRA method")
        return method, method.load(backbone(), Path(adapter_dir)).eval()

    return load


def nested_configurations(load: Loader, levels: int = 4, *, surrogate=None, cost=None) -> list[Configuration]:
    """The nested hardened configurations c_1 ... c_K, smallest first (section 1 of the module
    docstring; `distil` keeps the Pareto-optimal ones). `load()` gives a
    fresh copy of the trained gated model each call (`adapter_loader`). The cost model: `cost`
    (an object with `predict(s)` and `terms(s)`, as gated_lora's), else `surrogate_cost` of
    `surrogate`, else the loaded method's own `cost`."""
    method, model = load()
    if cost is None:
        cost = surrogate_cost(method, surrogate) if surrogate is not None else getattr(method, "cost", None)
    if cost is None:
        raise ValueError("pareto_tree: no cost model; give the meta-surrogate (surrogate=...) or cost=...")
    configurations = []
    for index, (share, threshold, mask) in enumerate(nested_masks(method.bank, levels)):
        if index:
            method, model = load()
        close_gates(method.bank, mask)
        kept = {k: float(v) for k, v in method.bank.hard_counts().items()}
        s = {**kept, "seq_len": method.config.seq_len, "param_bits": method.config.param_bits}
        with torch.no_grad():
            scalar = float(sum(cost.terms(s).values()))
        hardened = method.harden(model).eval()
        configurations.append(Configuration(
            name=f"c{index + 1}", share=share, threshold=threshold,
            open_gates={k: int(m.sum()) for k, m in mask.items()},
            kept=kept, prediction=cost.predict(s), cost=scalar, params=count_params(hardened), model=hardened))
    return configurations


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points (every coordinate to minimise; in order of size, later = larger
    configuration) that no other dominates: <= everywhere and < somewhere, or equal and later.
    The last is always kept (the reference configuration)."""
    n = len(points)

    def dominated(i: int) -> bool:
        return any(all(a <= b for a, b in zip(points[j], points[i]))
                   and (any(a < b for a, b in zip(points[j], points[i])) or j > i) for j in range(n) if j != i)

    return [i for i in range(n) if i == n - 1 or not dominated(i)]


# ---------------------------------------------------------------- 2. features


class UnigramFeatures:
    """(entropy_bits, position) of an input's token ids (module docstring, section 2)."""

    def __init__(self, counts: Mapping[int, int], vocab_size: int):
        if vocab_size < 1 or any(c < 1 for c in counts.values()):
            raise ValueError("UnigramFeatures: vocab_size >= 1 and positive counts needed")
        self.counts = {int(t): int(c) for t, c in counts.items()}
        self.vocab_size = int(vocab_size)
        denominator = sum(self.counts.values()) + self.vocab_size
        self.surprisal = {t: math.log2(denominator / (c + 1)) for t, c in self.counts.items()}
        self.unseen = math.log2(denominator)

    @classmethod
    def fit(cls, rows: Sequence[Mapping[str, Any]], vocab_size: int) -> "UnigramFeatures":
        counts: Counter[int] = Counter()
        for row in rows:
            counts.update(int(t) for t in row["input_ids"])
        return cls(counts, vocab_size)

    def __call__(self, input_ids: Sequence[int]) -> tuple[float, float]:
        n = len(input_ids)
        if not n:
            raise ValueError("an input without tokens has no features")
        get, unseen = self.surprisal.get, self.unseen
        return sum(get(t, unseen) for t in input_ids) / n, float(n)

    def matrix(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return np.array([self(row["input_ids"]) for row in rows], dtype=np.float64).reshape(-1, len(FEATURES))

    def to_json(self) -> str:
        return json.dumps({"format": UNIGRAM_FORMAT, "version": VERSION, "vocab_size": self.vocab_size,
                           "smoothing": "add-one", "counts": {str(t): c for t, c in sorted(self.counts.items())}},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "UnigramFeatures":
        data = json.loads(text)
        if data.get("format") != UNIGRAM_FORMAT or data.get("version") != VERSION:
            raise ValueError(f"not a {UNIGRAM_FORMAT} v{VERSION} table")
        return cls({int(t): c for t, c in data["counts"].items()}, data["vocab_size"])


# ---------------------------------------------------------------- 3. the MLP controller


def cheapest_agreeing(labels: np.ndarray, costs: Sequence[float]) -> np.ndarray:
    """Per input (row of `labels`, one column per configuration, the last the reference), the
    index of the cheapest configuration whose label is the reference's (ties: smaller index)."""
    order = sorted(range(labels.shape[1]), key=lambda k: (costs[k], k))
    agree = labels[:, order] == labels[:, -1:]
    return np.asarray(order)[agree.argmax(axis=1)]


class ControllerMLP(nn.Module):
    """Standardised features -> Linear(2, hidden) -> ReLU -> Linear(hidden, K) logits."""

    def __init__(self, n_configs: int, mean: np.ndarray, std: np.ndarray, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(len(FEATURES), hidden), nn.ReLU(), nn.Linear(hidden, n_configs))
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.mean) / self.std)

    @torch.no_grad()
    def choose(self, features: np.ndarray) -> np.ndarray:
        return self(torch.as_tensor(features, dtype=torch.float32)).argmax(-1).numpy()


def train_controller(features: np.ndarray, targets: np.ndarray, n_configs: int, *, hidden: int = 16,
                     epochs: int = 400, lr: float = 1e-2, seed: int = 0) -> ControllerMLP:
    std = features.std(axis=0)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mlp = ControllerMLP(n_configs, features.mean(axis=0), np.where(std > 1e-12, std, 1.0), hidden)
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(targets, dtype=torch.long)
    optimiser = torch.optim.Adam(mlp.parameters(), lr=lr)
    for _ in range(epochs):
        optimiser.zero_grad()
        nn.functional.cross_entropy(mlp(x), y).backward()
        optimiser.step()
    return mlp.eval().requires_grad_(False)


# ---------------------------------------------------------------- 4. the tree


def distil_tree(features: np.ndarray, choices: np.ndarray, n_configs: int, *, depth: int = MAX_DEPTH,
                seed: int = 0):
    """(tree JSON as a dict, the fitted sklearn classifier) of `choices` on `features`."""
    from sklearn.tree import DecisionTreeClassifier

    classifier = DecisionTreeClassifier(max_depth=depth, random_state=seed)
    classifier.fit(np.asarray(features, dtype=np.float32), choices)
    return tree_json(classifier, n_configs), classifier


def tree_json(classifier, n_configs: int) -> dict[str, Any]:
    tree, classes = classifier.tree_, classifier.classes_

    def node(i: int):
        left, right = int(tree.children_left[i]), int(tree.children_right[i])
        if left == -1:
            return int(classes[int(np.argmax(tree.value[i][0]))])
        low, high = node(left), node(right)
        return low if low == high else [int(tree.feature[i]), float(tree.threshold[i]), low, high]

    return {"format": TREE_FORMAT, "version": VERSION, "features": list(FEATURES), "configs": int(n_configs),
            "tree": node(0)}


def dumps_tree(tree: Mapping[str, Any]) -> str:
    """The tree's JSON (compact); refused above MAX_TREE_BYTES."""
    text = json.dumps(tree, separators=(",", ":"))
    if len(text.encode()) > MAX_TREE_BYTES:
        raise ValueError(f"the tree's JSON is {len(text.encode())} bytes, more than {MAX_TREE_BYTES}")
    return text


def loads_tree(text: str) -> dict[str, Any]:
    """A tree from its JSON, checked: format, features, depth <= 3, leaves < configs."""
    tree = json.loads(text)
    if tree.get("format") != TREE_FORMAT or tree.get("version") != VERSION:
        raise ValueError(f"not a {TREE_FORMAT} v{VERSION} tree")
    if tree.get("features") != list(FEATURES):
        raise ValueError(f"tree features {tree.get('features')}, this code computes {list(FEATURES)}")

    def check(node, depth: int) -> None:
        if isinstance(node, list):
            if depth >= MAX_DEPTH or len(node) != 4 or node[0] not in range(len(FEATURES)):
                raise ValueError(f"bad tree node {node!r} at depth {depth}")
            check(node[2], depth + 1)
            check(node[3], depth + 1)
        elif not isinstance(node, int) or node not in range(tree["configs"]):
            raise ValueError(f"bad tree leaf {node!r} (configurations: {tree['configs']})")

    check(tree["tree"], 0)
    return tree


def _float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def choose(tree: Mapping[str, Any], features: Sequence[float] | Mapping[str, float]) -> int:
    """The configuration index the tree gives `features` (in the tree's feature order, or by
    name); features rounded to float32 as sklearn's predict does."""
    if isinstance(features, Mapping):
        features = [features[name] for name in tree["features"]]
    x = [_float32(float(v)) for v in features]
    node = tree["tree"]
    while isinstance(node, list):
        node = node[2] if x[node[0]] <= node[1] else node[3]
    return node


# ---------------------------------------------------------------- 5. inference


@torch.no_grad()
def predict_labels(model: nn.Module, rows: Sequence[Mapping[str, Any]], pad_id: int,
                   batch_size: int = 32) -> np.ndarray:
    """Argmax labels of a classifier on `rows` (right padding, masked)."""
    from ..data.loading import attention_mask, pad_sequences

    out = []
    for start in range(0, len(rows), batch_size):
        ids = [rows[i]["input_ids"] for i in range(start, min(start + batch_size, len(rows)))]
        logits = model(input_ids=pad_sequences(ids, pad_id), attention_mask=attention_mask(ids)).logits
        out.append(logits.argmax(-1).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


class ParetoRouter:
    """Per input: features, the tree's choice, that configuration's hardened model."""

    def __init__(self, models: Sequence[nn.Module], features: UnigramFeatures, tree: Mapping[str, Any],
                 pad_id: int):
        if tree["configs"] != len(models):
            raise ValueError(f"the tree routes to {tree['configs']} configurations, {len(models)} models given")
        self.models, self.features, self.tree, self.pad_id = list(models), features, tree, pad_id

    def route(self, input_ids: Sequence[int]) -> int:
        return choose(self.tree, self.features(input_ids))

    def predict(self, rows: Sequence[Mapping[str, Any]], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """(labels, chosen configuration) per input; inputs are batched by configuration."""
        choices = np.array([self.route(row["input_ids"]) for row in rows], dtype=np.int64)
        labels = np.zeros(len(rows), dtype=np.int64)
        for k in np.unique(choices):
            picked = np.flatnonzero(choices == k)
            labels[picked] = predict_labels(self.models[k], [rows[i] for i in picked], self.pad_id, batch_size)
        return labels, choices


# ---------------------------------------------------------------- the whole distillation


@dataclass
class Distilled:
    configurations: list[Configuration]  # the Pareto set, smallest first (the tree's leaves index it)
    features: UnigramFeatures
    controller: ControllerMLP
    tree: dict[str, Any]
    classifier: Any  # the sklearn tree the JSON was written from
    train: dict[str, Any]  # what the controller and the tree were fitted on, and how well

    def router(self, pad_id: int) -> ParetoRouter:
        return ParetoRouter([c.model for c in self.configurations], self.features, self.tree, pad_id)


def distil(configurations: Sequence[Configuration], train_rows: Sequence[Mapping[str, Any]], vocab_size: int,
           pad_id: int, *, n_inputs: int = 512, min_agreement: float = 0.0, seed: int = 0,
           batch_size: int = 32) -> Distilled:
    """Unigram table on every training input; on `n_inputs` of them (a seeded draw; all when
    fewer) the labels of each nested configuration, the Pareto set (agreement with c_K, cost
    metrics; sets `agreement` and `pareto` on each configuration), the MLP's targets, the MLP
    and the tree. `min_agreement` > 0 also leaves out the configurations that agree with c_K
    on fewer inputs (module docstring, section 3)."""
    features = UnigramFeatures.fit(train_rows, vocab_size)
    picked = np.sort(np.random.default_rng(seed).permutation(len(train_rows))[:n_inputs])
    rows = [train_rows[int(i)] for i in picked]
    every = np.stack([predict_labels(c.model, rows, pad_id, batch_size) for c in configurations], axis=1)
    agreement = (every == every[:, -1:]).mean(axis=0)
    usable = [k for k in range(len(configurations)) if agreement[k] >= min_agreement]
    front = [usable[i] for i in pareto_front([[-agreement[k], *configurations[k].prediction.values()]
                                              for k in usable])]
    for k, configuration in enumerate(configurations):
        configuration.agreement, configuration.pareto = float(agreement[k]), k in front
    kept, labels = [configurations[k] for k in front], every[:, front]
    targets = cheapest_agreeing(labels, [c.cost for c in kept])
    x = features.matrix(rows)
    controller = train_controller(x, targets, len(kept), seed=seed)
    choices = controller.choose(x)
    tree, classifier = distil_tree(x, choices, len(kept), seed=seed)
    tree_choices = np.array([choose(tree, row) for row in x])
    train = {"inputs": len(rows), "min_agreement": min_agreement, "pareto": [c.name for c in kept],
             "dropped": [c.name for c in configurations if not c.pareto],
             "target_share": shares(targets, len(kept)), "mlp_choice_share": shares(choices, len(kept)),
             "mlp_matches_target": float((choices == targets).mean()),
             "tree_matches_mlp": float((tree_choices == choices).mean())}
    return Distilled(kept, features, controller, tree, classifier, train)


def shares(choices: np.ndarray, n: int) -> list[float]:
    return [float((choices == k).mean()) if len(choices) else 0.0 for k in range(n)]


def evaluate(distilled: Distilled, rows: Sequence[Mapping[str, Any]], pad_id: int,
             batch_size: int = 32) -> dict[str, Any]:
    """On held-out `rows`: fidelity of the tree to the MLP, routed accuracy (through the
    router) against every configuration, the routed choices' mean predicted metrics."""
    configurations = distilled.configurations
    n = len(configurations)
    x = distilled.features.matrix(rows)
    mlp_choices = distilled.controller.choose(x)
    routed, choices = distilled.router(pad_id).predict(rows, batch_size)
    labels = np.stack([predict_labels(c.model, rows, pad_id, batch_size) for c in configurations], axis=1)
    gold = np.array([int(row["label"]) for row in rows])
    metrics = list(configurations[-1].prediction)
    predicted = {m: float(np.mean([configurations[k].prediction[m] for k in choices])) for m in metrics}
    return {
        "inputs": len(rows),
        "fidelity": float((choices == mlp_choices).mean()),
        "choice_share": shares(choices, n),
        "routed_accuracy": float((routed == gold).mean()),
        "largest_accuracy": float((labels[:, -1] == gold).mean()),
        "config_accuracy": {c.name: float((labels[:, k] == gold).mean()) for k, c in enumerate(configurations)},
        "agreement_with_largest": float((routed == labels[:, -1]).mean()),
        "routed_predicted": predicted,
        "largest_predicted": dict(configurations[-1].prediction),
        "routed_predicted_ratio": {m: predicted[m] / configurations[-1].prediction[m] for m in metrics},
    }


def measure_overhead(distilled: Distilled, rows: Sequence[Mapping[str, Any]], repeats: int = 50) -> dict[str, Any]:
    """(feature extraction + tree) time over `rows`, per token and per input, the median of
    `repeats` passes, and the MLP's (feature extraction + one forward per input) likewise.
    Pure Python for the tree; the caller pins torch to one thread."""
    features, tree, controller = distilled.features, distilled.tree, distilled.controller
    inputs = [list(row["input_ids"]) for row in rows]
    tokens = sum(len(ids) for ids in inputs)

    def tree_pass() -> float:
        started = time.perf_counter()
        for ids in inputs:
            choose(tree, features(ids))
        return time.perf_counter() - started

    @torch.no_grad()
    def mlp_pass() -> float:
        started = time.perf_counter()
        for ids in inputs:
            controller(torch.tensor([features(ids)], dtype=torch.float32)).argmax(-1)
        return time.perf_counter() - started

    tree_s = statistics.median(tree_pass() for _ in range(repeats))
    mlp_s = statistics.median(mlp_pass() for _ in range(max(1, repeats // 5)))
    return {"inputs": len(inputs), "tokens": tokens, "repeats": repeats, "threads": torch.get_num_threads(),
            "tree_us_per_token": tree_s / tokens * 1e6, "tree_us_per_input": tree_s / len(inputs) * 1e6,
            "mlp_us_per_input": mlp_s / len(inputs) * 1e6}


__all__ = ["Configuration", "ControllerMLP", "Distilled", "FEATURES", "MAX_TREE_BYTES", "ParetoRouter",
           "UnigramFeatures", "adapter_loader", "cheapest_agreeing", "choose", "distil", "distil_tree", "dumps_tree",
           "evaluate", "loads_tree", "measure_overhead", "nested_configurations", "nested_masks", "pareto_front",
           "predict_labels", "surrogate_cost", "train_controller"]
