"""Meta-training settings of the surrogate (torch-free: config validation reads them before
any job starts)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping


class SurrogateConfigError(ValueError):
    """A meta-training setting that is unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class MetaTrainConfig:
    steps: int = 2000
    lr: float = 3e-3
    weight_decay: float = 0.0
    mixup_alpha: float = 0.4  # Beta(alpha, alpha); 0: no mixup
    k_shot: int = 5  # calibration measurements of the unseen device
    hidden: int = 64
    embed: int = 8
    rows_per_device: int = 64  # rows drawn per device and step (unseen: k_shot of them calibrate)
    devices_per_step: int = 0  # devices per step, the unseen one included; 0: all
    seed: int = 0
    progress: bool = True  # tqdm progress bar

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            expected = type(getattr(MetaTrainConfig, name))
            if not kind_matches(value, expected):
                raise SurrogateConfigError(f"meta_surrogate.{name}: expected {expected.__name__}, got {value!r}")
        problems = [rule for rule, ok in self.rules().items() if not ok]
        if problems:
            raise SurrogateConfigError(f"meta_surrogate: {'; '.join(problems)}")

    def rules(self) -> dict[str, bool]:
        return {
            "steps must be >= 0": self.steps >= 0,
            "lr must be > 0": self.lr > 0,
            "weight_decay must be >= 0": self.weight_decay >= 0,
            "mixup_alpha must be >= 0": self.mixup_alpha >= 0,
            "k_shot must be >= 1": self.k_shot >= 1,
            "hidden and embed must be >= 1": min(self.hidden, self.embed) >= 1,
            "rows_per_device must be > k_shot": self.rows_per_device > self.k_shot,
            "devices_per_step must be 0 (all) or >= 2": self.devices_per_step == 0 or self.devices_per_step >= 2,
        }

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, where: str = "meta_surrogate") -> "MetaTrainConfig":
        values = dict(values or {})
        known = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(str(key) for key in values if key not in known)
        if unknown:
            raise SurrogateConfigError(
                f"{', '.join(f'{where}.{key}' for key in unknown)}: unknown key(s); known: {', '.join(known)}")
        floats = {field.name for field in dataclasses.fields(cls) if field.type in ("float", float)}
        return cls(**{key: float(value) if key in floats and kind_matches(value, int) else value
                      for key, value in values.items()})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def kind_matches(value: Any, expected: type) -> bool:
    """bool only for bool; int (not bool) for int; a float field also takes an int."""
    if expected is bool or isinstance(value, bool):
        return expected is bool and isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float))
    return isinstance(value, expected)
