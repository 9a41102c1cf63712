"""Optional Weights & Biases mirror of a final run's local log (seed 001's logging).

Local files stay the source of truth: the mirror replays train_log.jsonl and the run
summary once the run has finished, so an offline or failed upload never changes a result.
Search trials are never logged. `wandb.mode: disabled` (the default) imports nothing.
"""

from __future__ import annotations

from typing import Any


def mirror_to_wandb(run_cfg: dict[str, Any], log: list[dict[str, Any]], summary: dict[str, Any]) -> bool:
    """Log `log` records and `summary` to W&B unless disabled; True when something was logged."""
    settings = run_cfg.get("wandb", {})
    mode = settings.get("mode", "disabled")
    if mode == "disabled":
        return False
    try:
        import wandb
    except ImportError as err:
        raise RuntimeError(
            f"wandb.mode is {mode!r} but wandb is not installed: "
            "pip install 'wattpeft[wandb]', or set wandb.mode: disabled"
        ) from err
    run = wandb.init(
        project=settings.get("project", "wattpeft"),
        entity=settings.get("entity"),
        name=run_cfg["run_id"],
        group=run_cfg["group_id"],
        config=run_cfg,
        mode=mode,
    )
    try:
        for record in log:
            split = record.get("split", "train")
            values = {f"{split}/{k}": v for k, v in record.items() if k not in ("step", "split")}
            run.log(values, step=record["step"])
        run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
    finally:
        run.finish()
    return True
