"""HIMALAYA's parts that run in the forward pass: the quantiser, the shared dictionary and
router (`Bank`), and the wrapped square linear layer (`HimalayaLinear`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-6


# ---------------------------------------------------------------- the quantiser


def quantise(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (last dimension) uniform symmetric midrise quantiser: 2^bits levels
    (k + 1/2) s, k in [-2^(bits-1), 2^(bits-1) - 1], s = max|row| / 2^(bits-1). Midrise uses all
    2^bits codes (3 bits: +-0.5, 1.5, 2.5, 3.5 s). Returns (codes as int16, scales (rows,))."""
    rows = x.detach().float().reshape(-1, x.shape[-1])
    half = 2 ** (bits - 1)
    scales = rows.abs().amax(dim=1).clamp(min=1e-30) / half
    codes = torch.floor(rows / scales[:, None]).clamp(-half, half - 1)
    return codes.to(torch.int16), scales


def dequantise(codes: torch.Tensor, scales: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    return ((codes.float() + 0.5) * scales[:, None]).reshape(shape)


def roundtrip_bound(x: torch.Tensor, bits: int) -> torch.Tensor:
    """The elementwise bound on |x - dequantise(quantise(x))|: s / 2 in exact arithmetic (s the
    row's scale; every value lies in its level's interval [k s, (k + 1) s), the row's maximum at
    the top level's closed end), plus one float32 epsilon of max|row| = 2^(bits-1) s for the
    rounding of x / s and of (k + 1/2) s (measured: under half of that)."""
    _, scales = quantise(x, bits)
    bound = scales * (0.5 + torch.finfo(torch.float32).eps * 2 ** (bits - 1))
    return bound[:, None].expand(-1, x.shape[-1]).reshape(x.shape)


def fake_quantise(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Exactly the stored value dequantise(quantise(x)), with a straight-through gradient:
    q + (x - x) keeps q's bits (x + (q - x) would round), so a saved adapter computes what the
    trained one did."""
    q = dequantise(*quantise(x, bits), x.shape).to(x.dtype)
    return q + (x - x.detach())


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed codes of `bits` bits each, bit-packed into ceil(n bits / 8) bytes (uint8)."""
    unsigned = (codes.flatten().to(torch.int32) + 2 ** (bits - 1)).to(torch.uint8)
    stream = ((unsigned[:, None] >> torch.arange(bits, dtype=torch.uint8)) & 1).flatten()
    stream = F.pad(stream, (0, -len(stream) % 8))
    return (stream.reshape(-1, 8) << torch.arange(8, dtype=torch.uint8)).sum(dim=1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    stream = ((packed[:, None] >> torch.arange(8, dtype=torch.uint8)) & 1).flatten()[: n * bits]
    unsigned = (stream.reshape(n, bits).to(torch.int32) << torch.arange(bits, dtype=torch.int32)).sum(dim=1)
    return (unsigned - 2 ** (bits - 1)).to(torch.int16)


def store(x: torch.Tensor, bits: int) -> dict[str, torch.Tensor]:
    """`x` as saved: packed codes and per-row float32 scales."""
    codes, scales = quantise(x, bits)
    return {"codes": pack_codes(codes, bits), "scales": scales.contiguous()}


def restore(stored: dict[str, torch.Tensor], bits: int, shape: tuple[int, ...]) -> torch.Tensor:
    n = math.prod(shape)
    codes = unpack_codes(stored["codes"], bits, n).reshape(-1, shape[-1])
    return dequantise(codes, stored["scales"], shape)


# ---------------------------------------------------------------- the dictionary and the router


def unit_rows(n: int, d: int, seed: int) -> torch.Tensor:
    """n seeded isotropic unit vectors of width d."""
    rows = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return rows / rows.norm(dim=1, keepdim=True)


def nearest_atoms(vectors: torch.Tensor, atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, |cosine|) of each vector's nearest atom. Exact search: with a few dozen atoms in
    hundreds of dimensions a KD-tree prunes nothing (the curse of dimensionality) and one
    matrix product is faster. |cos|: r and -r give the same update r r^T."""
    cos = F.normalize(vectors, dim=-1, eps=_EPS) @ F.normalize(atoms, dim=-1, eps=_EPS).T
    similarity, index = cos.abs().max(dim=-1)
    return index, similarity


def residual(vectors: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
    """`vectors` minus their orthogonal projection onto the span of `atoms`."""
    u, s, _ = torch.linalg.svd(atoms.T, full_matrices=False)
    basis = u[:, s > s.max() * 1e-5]
    return vectors - (vectors @ basis) @ basis.T


class Router(nn.Module):
    """H_theta, shared by every adapted layer: [layer_norm(x), task embedding] -> hidden ->
    (gate logit, coefficient) per atom."""

    def __init__(self, d: int, n_atoms: int, hidden: int, n_tasks: int, task_dim: int):
        super().__init__()
        self.task_embedding = nn.Embedding(n_tasks, task_dim)
        self.hidden = nn.Linear(d + task_dim, hidden)
        self.out = nn.Linear(hidden, 2 * n_atoms)  # rows [0, A): gate logits, [A, 2A): coefficients
        self.n_atoms = n_atoms

    def forward(self, x: torch.Tensor, task: int, weights: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = weights["task_embedding.weight"][task].expand(*x.shape[:-1], -1)
        features = torch.cat([F.layer_norm(x, x.shape[-1:]), embedding], dim=-1)
        hidden = F.gelu(F.linear(features, weights["hidden.weight"], weights["hidden.bias"]))
        logits, coefficients = F.linear(hidden, weights["out.weight"], weights["out.bias"]).split(self.n_atoms, -1)
        return logits, coefficients


def gate_probabilities(logits: torch.Tensor, temperature: float, max_active: float) -> torch.Tensor:
    """pi = sigmoid(logit / T), scaled down per token where sum(pi) > max_active: the expected
    number of active atoms (sum of the Bernoulli means) is at most max_active, always."""
    pi = torch.sigmoid(logits / temperature)
    return pi * (max_active / pi.sum(dim=-1, keepdim=True).clamp(min=max_active))


def sample_gates(pi: torch.Tensor, tau: float) -> torch.Tensor:
    """Relaxed Bernoulli (concrete) sample of Bernoulli(pi) at temperature tau."""
    pi = pi.clamp(_EPS, 1 - _EPS)
    u = torch.rand_like(pi).clamp(_EPS, 1 - _EPS)
    return torch.sigmoid((torch.log(pi) - torch.log1p(-pi) + torch.log(u) - torch.log1p(-u)) / tau)


def top_gates(pi: torch.Tensor, k: int) -> torch.Tensor:
    """Hard gates for inference: the k most probable atoms on, the others off."""
    return torch.zeros_like(pi).scatter_(-1, pi.topk(k, dim=-1).indices, 1.0)


class Bank(nn.Module):
    """The dictionary (fixed core buffer, trainable elastic pool) and the router, hung once on
    the model and read by every `HimalayaLinear`. While `fake_quant` is on, the forward pass
    uses the stored (quantised) values of the elastic pool, core and router; a loaded bank
    holds those values already (`fake_quant` off: the midrise quantiser is not idempotent)."""

    def __init__(self, d: int, config, n_tasks: int):
        super().__init__()
        self.config, self.d = config, d
        self.register_buffer("core", unit_rows(config.core_atoms, d, config.seed))
        self.elastic = nn.Parameter(unit_rows(config.elastic_atoms, d, config.seed + 1))
        self.router = Router(d, self.n_atoms, config.router_hidden, n_tasks, config.task_embedding_dim)
        self.fake_quant = True
        self.task = 0
        self.temperature = config.router_temperature_init
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (sampled inputs, mean pi) per call
        self.generator = torch.Generator().manual_seed(config.seed)  # which tokens are sampled

    @property
    def n_atoms(self) -> int:
        return self.config.core_atoms + self.config.elastic_atoms

    def atoms(self) -> torch.Tensor:
        """(A, d): core atoms then elastic atoms, as the forward pass uses them."""
        atoms = torch.cat([self.core, self.elastic])
        return fake_quantise(atoms, self.config.dictionary_bits) if self.fake_quant else atoms

    def router_weights(self) -> dict[str, torch.Tensor]:
        weights = dict(self.router.named_parameters())
        if self.fake_quant:
            weights = {k: fake_quantise(w, self.config.coefficient_bits) for k, w in weights.items()}
        return weights

    def update_direction(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(r, pi) per token of x (..., d): r the normalised gated mix of atoms, ||r|| = 1."""
        logits, coefficients = self.router(x, self.task, self.router_weights())
        pi = gate_probabilities(logits, self.temperature, self.config.max_active_atoms)
        if self.training:
            gates = sample_gates(pi, self.config.gumbel_tau)
        else:
            gates = top_gates(pi, min(int(self.config.max_active_atoms), self.n_atoms))
        mix = (gates * coefficients) @ self.atoms()
        return mix * torch.rsqrt(mix.pow(2).sum(dim=-1, keepdim=True) + _EPS**2), pi

    def collect(self, x: torch.Tensor, pi: torch.Tensor) -> None:
        """Keep a few of this call's input tokens and the mean gate probabilities, for growth and
        usage after the optimiser step."""
        tokens = x.detach().reshape(-1, self.d)
        index = torch.randint(len(tokens), (self.config.growth_sample_tokens,), generator=self.generator)
        self.pending.append((tokens[index.to(tokens.device)].float(), pi.detach().reshape(-1, self.n_atoms).mean(0)))


class HimalayaLinear(nn.Module):
    """y = base_layer(x) + r (r . x) / sqrt(d): the frozen weight plus r r^T / sqrt(d), r the
    token's own unit direction. The router reads the token's own input (the seed routes from a
    pooled token): cached decoding then needs no state across steps."""

    def __init__(self, base_layer: nn.Module, bank: Bank, dropout: float = 0.0):
        super().__init__()
        self.base_layer = base_layer
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._bank = (bank,)  # a reference, not a submodule: the bank hangs on the model
        self.last_sq_norm: torch.Tensor | None = None  # mean ||r||^2 over the last forward's tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)  # the frozen path as the backbone computes it (4-bit included)
        bank = self._bank[0]
        inputs = x.float()
        r, pi = bank.update_direction(inputs)
        if bank.training:
            bank.collect(inputs, pi)
        self.last_sq_norm = r.detach().pow(2).sum(-1).mean()  # a tensor: no device sync per call
        along = (r * self.lora_dropout(inputs)).sum(dim=-1, keepdim=True)
        return out + (r * along / math.sqrt(bank.d)).to(out.dtype)


__all__ = ["Bank", "HimalayaLinear", "Router", "dequantise", "fake_quantise", "gate_probabilities",
           "nearest_atoms", "pack_codes", "quantise", "residual", "restore", "roundtrip_bound", "sample_gates",
           "store", "top_gates", "unit_rows", "unpack_codes"]
