"""The meta-surrogate of the hardware-surrogate family: psi(s, device) -> (energy J, latency ms,
peak power W), meta-trained leave-one-device-out on device profile tables so that an
unseen device needs only 5 measurements (a linear calibration per metric).

    from wattpeft.surrogate import train_surrogate, fit_calibration, evaluate, save_surrogate

model.py (features, device tags, the network), calibration.py (psi' = a psi + b),
train.py (meta-training), store.py (safetensors + JSON), evaluate.py (against per-device
regressions on 5 and 200 rows). See docs/devices.md, section "Meta-surrogate".
"""

from __future__ import annotations

from ..utils.lazy import lazy_exports

_EXPORTS = {
    "model": ("FEATURES", "MetaSurrogate", "Normalisation", "TARGETS", "features"),
    "calibration": ("Calibration", "fit_calibration"),
    "train": ("MetaTrainConfig", "SurrogateConfigError", "masked_mse", "table_hash", "train_surrogate"),
    "store": ("SurrogateStoreError", "load_surrogate", "save_surrogate"),
    "evaluate": ("EvalProtocol", "RESULT_COLUMNS", "evaluate"),
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
