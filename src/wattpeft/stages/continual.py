"""Stream (continual) families: one adapter trained over a stream of tasks, then scored on
every task after every task (the accuracy matrix), then timed against the bare backbone.

Three stages, one rule each (workflow/rules/continual.smk):
- `run_stream_finetune`: tasks in stream order, never revisited, nothing replayed. After
  each task the method consolidates (`end_task`, from that task's own rows only) and the
  adapter is stored as a snapshot. A killed stream resumes at the task and the step where it
  stopped: finished tasks from their saved state, the current one from the trainer's last
  checkpoint.
- `run_accuracy_matrix`: R[i][j], the score on task j's test split of the adapter stored
  after task i (hardened as the method exports it), plus the bare backbone's scores.
- `run_stream_evaluate` (a measuring job): the continual metrics from R
  (evaluation/continual.py), the bytes of the stored adapter, single-thread CPU latency of
  the adapted against the bare backbone in one run, and joules per task where a counter exists.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

from ..utils.io import atomic_path, read_json, write_json
from .common import RunData, model_source, open_run_data, pin_threads

SNAPSHOT = "task-{:02d}"  # the adapter stored after task i, inside the snapshots folder
LATENCY_LABEL = "host CPU, not a Raspberry Pi"  # on a GPU node: the GPU's name instead
DEFAULT_LATENCY_SAMPLES = 50


def _log(message: str) -> None:
    import sys

    print(f"[wattpeft.continual] {message}", file=sys.stderr, flush=True)


def stream_task_names(run_cfg: dict[str, Any]) -> list[str]:
    return [task["name"] for task in run_cfg["dataset"]["tasks"]]


def load_stream_backbone(model_dir: Path, model_cfg: dict[str, Any]):
    """The frozen decoder every task shares, at the family's backbone precision."""
    from ..models import load_backbone

    return load_backbone(model_source(model_dir), "text2text", precision=model_cfg.get("precision", "fp32"))


def make_stream_method(run_cfg: dict[str, Any], total_steps: int):
    from ..methods import get_method

    names = stream_task_names(run_cfg)
    return get_method(run_cfg["method"])(
        run_cfg["method_params"], run_cfg["budget"], "text2text", total_steps, {"stream": {"tasks": names}}
    )


# ---------------------------------------------------------------- training


class StreamState:
    """What a finished task leaves for the next one, under checkpoints/<config_hash>/stream:
    the trainable parameters, the method's state, the log so far and per-task records."""

    def __init__(self, root: Path):
        self.root = root / "stream"

    def path(self, task: int) -> Path:
        return self.root / f"{SNAPSHOT.format(task)}.pt"

    def finished(self) -> int:
        """How many tasks are done (the highest saved task + 1; 0 when none)."""
        done = [int(p.stem.split("-")[1]) for p in self.root.glob("task-*.pt")]
        return max(done) + 1 if done else 0

    def save(self, task: int, model, method, log: list, records: list) -> None:
        import torch

        from ..training.checkpoint import trainable_state

        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path(task)) as tmp:
            torch.save({"params": trainable_state(model), "method": method.state_dict(model),
                        "log": log, "records": records}, tmp)

    def load(self, task: int, model, method) -> tuple[list, list]:
        import torch

        state = torch.load(self.path(task), weights_only=False)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in state["params"].items():
                params[name].copy_(value)
        method.load_state_dict(model, state["method"])
        return state["log"], state["records"]


def per_sample_batches(rows, collate) -> Iterator[dict]:
    """The task's training rows in order, one per batch (per-sample Fisher); made as the
    method reads them, which stops at its own count (EWC's fisher_samples)."""
    for index in range(len(rows)):
        yield collate([rows[index]])


def _task_cfg(run_cfg: dict[str, Any], task: int, name: str) -> dict[str, Any]:
    """What the shared Trainer reads, for one task: the run's seed and training settings."""
    return {"run_id": f"{run_cfg['run_id']} [{task + 1}/{len(run_cfg['dataset']['tasks'])} {name}]",
            "seed": run_cfg["seed"], "training": run_cfg["training"]}


def _stream_record(record: dict[str, Any], task: int, name: str, offset: int) -> dict[str, Any]:
    """A trainer record of one task, placed on the stream's global step axis."""
    return {**record, "step": offset + record["step"], "task_step": record["step"], "task": task, "task_name": name}


def run_stream_finetune(run_cfg: dict[str, Any], data_dirs: list[Path], model_dir: Path, run_dir: Path,
                        out: dict[str, Path], threads: int = 1, progress: bool = True) -> dict:
    """Train one run over its stream; writes out['snapshots'] (folder of per-task adapters),
    out['summary'], out['log'], out['config']."""
    from accelerate.utils import set_seed

    from ..data.loading import make_collator
    from ..energy.meter import make_meter
    from ..training.trainer import Trainer, plan_schedule
    from ..training.validation import validation_metrics

    pin_threads(threads)
    names = stream_task_names(run_cfg)
    tasks = [open_run_data(d) for d in data_dirs]
    train_rows = [data.split("train") for data in tasks]
    schedules = [plan_schedule(len(rows), run_cfg["training"]) for rows in train_rows]
    set_seed(run_cfg["seed"])  # before the adapter is drawn: a resumed stream draws the same
    method = make_stream_method(run_cfg, sum(s.total_steps for s in schedules))
    model = method.attach(load_stream_backbone(Path(model_dir), run_cfg["model"]))
    root = Path(run_dir) / "checkpoints" / run_cfg["config_hash"]
    state, snapshots = StreamState(root), root / "snapshots"
    start = state.finished()
    log, records = state.load(start - 1, model, method) if start else ([], [])
    if start:
        _log(f"{run_cfg['run_id']}: resuming after task {start}/{len(names)} ({names[start - 1]})")
    with make_meter("auto") as meter:
        for i in range(start, len(names)):
            data, collate = tasks[i], make_collator("text2text", tasks[i].manifest["pad_token_id"])
            offset = sum(s.total_steps for s in schedules[:i])
            method.begin_task(model, i)
            val_rows = data.split("validation")
            trainer = Trainer(
                _task_cfg(run_cfg, i, names[i]), model, method, train_rows[i], collate,
                checkpoint_dir=root / SNAPSHOT.format(i), progress=progress,
                evaluate=lambda m, rows=val_rows, c=collate: validation_metrics(m, rows, c, "text2text"),
                record_fields=lambda: {"adapter_norm": method.adapter_norm(model)},
            )
            resumed_inside = (root / SNAPSHOT.format(i) / "LATEST").exists()
            meter.begin_window(names[i])
            outcome = trainer.train()
            energy = meter.end_window(names[i])
            method.end_task(model, i, per_sample_batches(train_rows[i], collate))
            log += [_stream_record(r, i, names[i], offset) for r in outcome.log]
            log.append({"step": offset + outcome.steps, "task": i, "task_name": names[i], "split": "task_end",
                        "adapter_norm": method.adapter_norm(model), **method.continual_fields(model)})
            records.append(_task_record(i, names[i], offset, outcome, energy, resumed_inside, data))
            with atomic_path(snapshots / SNAPSHOT.format(i)) as tmp:
                method.save(model, tmp)
            state.save(i, model, method, log, records)
            shutil.rmtree(root / SNAPSHOT.format(i), ignore_errors=True)  # the task's trainer checkpoints
    return _write_stream_outputs(run_cfg, method, tasks, snapshots, log, records, out, threads, start)


def _task_record(i, name, offset, outcome, energy, resumed_inside, data: RunData) -> dict[str, Any]:
    """One task's training facts; its energy only when a counter measured the whole task."""
    whole = energy.ok and not resumed_inside and outcome.resumed_from_step is None
    if whole:
        reason = None
    else:
        reason = energy.reason if not energy.ok else "the task was resumed: no single window measured all of it"
    return {
        "task": i, "name": name, "steps": outcome.steps, "first_step": offset + 1, "last_step": offset + outcome.steps,
        "train_time_s": outcome.train_time_s, "final_loss": outcome.final_loss, "validation": outcome.validation,
        "resumed_from_step": outcome.resumed_from_step, "data_hash": data.data_hash,
        "energy_j": energy.energy_j if whole else None, "energy_source": energy.source, "energy_reason": reason,
    }


def _write_stream_outputs(run_cfg, method, tasks, snapshots, log, records, out, threads, start) -> dict:
    from ..utils.io import stable_hash

    with atomic_path(out["snapshots"]) as tmp:
        shutil.copytree(snapshots, tmp)
    summary = {
        "run_id": run_cfg["run_id"],
        "tasks": records,
        "steps": sum(r["steps"] for r in records),
        "train_time_s": sum(r["train_time_s"] for r in records),
        "final_train_loss": records[-1]["final_loss"],
        "validation": records[-1]["validation"],
        "resumed_after_task": start or None,
        "mixed_precision": run_cfg["training"]["mixed_precision"],
        "threads": threads,
        "processes": 1,
        "method_stats": method.stats,
        "tuned_params": {},
        "data_hash": stable_hash([data.data_hash for data in tasks]),
        "config_hash": run_cfg["config_hash"],
    }
    write_json(out["config"], {**run_cfg, "data_hash": summary["data_hash"]})
    with atomic_path(out["log"]) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in log))
    write_json(out["summary"], summary)
    shutil.rmtree(Path(out["summary"]).parent / "checkpoints", ignore_errors=True)  # finished
    return summary


# ---------------------------------------------------------------- the accuracy matrix


def run_accuracy_matrix(run_cfg: dict[str, Any], data_dirs: list[Path], model_dir: Path, snapshots: Path,
                        out_path: Path, eval_cfg: dict[str, Any], threads: int = 1) -> dict:
    """R[i][j] for every snapshot i and task j, and the bare backbone's score on each task
    (`reference_scores`, for forward transfer): every score from a test split."""
    import torch

    from ..evaluation.text2text import score_split

    pin_threads(threads)
    names = stream_task_names(run_cfg)
    tasks = [open_run_data(d) for d in data_dirs]
    ev = eval_cfg["evaluation"]

    def score_all(model, method=None) -> list[dict]:
        scores = []
        for j, data in enumerate(tasks):
            if method is not None:
                method.set_task(model, j)  # task identity is known at test time
            scores.append(score_split(model, data.split("test"), data.manifest, pad_id=data.manifest["pad_token_id"],
                                      batch_size=ev["batch_size"], max_new_tokens=ev["max_new_tokens"]))
        return scores

    started = time.perf_counter()
    with torch.no_grad():
        reference = score_all(load_stream_backbone(Path(model_dir), run_cfg["model"]).eval())
        rows = []
        for i in range(len(names)):
            method, model = _hardened_snapshot(run_cfg, Path(model_dir), Path(snapshots) / SNAPSHOT.format(i))
            rows.append(score_all(model, method))
            _log(f"{run_cfg['run_id']}: after task {i + 1}/{len(names)}: "
                 + ", ".join(f"{n} {s['score']:.3f}" for n, s in zip(names, rows[-1])))
    result = {
        "run_id": run_cfg["run_id"],
        "tasks": names,
        "task_metrics": [s["metric"] for s in reference],
        "n_test": [s["n"] for s in reference],
        "accuracy_matrix": [[s["score"] for s in row] for row in rows],
        "reference_scores": [s["score"] for s in reference],
        "scored_on": "test split of each task; rows: the adapter stored after task i, hardened",
        "seconds": time.perf_counter() - started,
    }
    write_json(out_path, result)
    return result


def _hardened_snapshot(run_cfg: dict[str, Any], model_dir: Path, snapshot: Path):
    """(method, model): the adapter stored after one task on a fresh backbone, hardened, in
    eval mode; `method.set_task(model, j)` says which task the next inputs belong to."""
    method = make_stream_method(run_cfg, total_steps=1)
    model = method.harden(method.load(load_stream_backbone(model_dir, run_cfg["model"]), snapshot))
    return method, model.eval()


# ---------------------------------------------------------------- metrics.json


def run_stream_evaluate(run_cfg: dict[str, Any], eval_cfg: dict[str, Any], data_dirs: list[Path],
                        model_dir: Path, snapshots: Path, matrix_path: Path, summary_path: Path,
                        out_path: Path, threads: int = 1, measure_threads: int = 1) -> dict:
    """metrics.json of a stream run: the continual metrics (all from the one stored matrix),
    extra memory as the bytes of the final adapter as stored, and the CPU latency overhead."""
    import torch

    from ..energy.device import cpu_model_name, device_slug
    from ..evaluation.continual import continual_metrics

    pin_threads(measure_threads)
    matrix, summary = read_json(matrix_path), read_json(summary_path)
    names = stream_task_names(run_cfg)
    final = Path(snapshots) / SNAPSHOT.format(len(names) - 1)
    stored = sum(f.stat().st_size for f in final.rglob("*") if f.is_file())
    last = open_run_data(data_dirs[-1])
    latency = _latency_overhead(run_cfg, Path(model_dir), final, last, len(names) - 1,
                                run_cfg["dataset"].get("latency_samples", DEFAULT_LATENCY_SAMPLES))
    energies = [task["energy_j"] for task in summary["tasks"]]
    measured = all(e is not None for e in energies)
    sources = sorted({task["energy_source"] for task in summary["tasks"]})
    norms = [{"step": r["step"], "task": r["task"], "norm": r["adapter_norm"]}
             for r in _read_log(Path(summary_path).with_name("train_log.jsonl")) if r.get("adapter_norm") is not None]
    stats = summary["method_stats"]
    metrics = {
        **continual_metrics(matrix["accuracy_matrix"], matrix["reference_scores"]),
        "extra_memory_mb": stored / 1e6,
        "cpu_latency_overhead_pct": latency["overhead_pct"],
        "backbone_latency_ms": latency["backbone_ms"],
        "adapter_latency_ms": latency["adapter_ms"],
        "energy_j_per_task": sum(energies) / len(energies) if measured else None,
        "adapter_norm_max": max((n["norm"] for n in norms), default=None),
        "adapter_norm_final": norms[-1]["norm"] if norms else None,
        "train_time_s": summary["train_time_s"],
        "trainable_params": stats.get("trainable_params"),
        "achieved_budget_pct": stats.get("achieved_budget_pct"),
    }
    energy_source = sources[0] if measured and len(sources) == 1 else "unavailable"
    record = {
        "run_id": run_cfg["run_id"], "group_id": run_cfg["group_id"], "family": run_cfg["family"],
        "method": run_cfg["method"], "role": eval_cfg["role"], "model": run_cfg["model"]["name"],
        "dataset": "+".join(names), "budget": run_cfg["budget"], "seed": run_cfg["seed"], "mode": run_cfg["mode"],
        "task": "stream",
        "metrics": metrics,
        "budget_achieved_pct": stats.get("achieved_budget_pct"),
        "energy_source": energy_source,
        "energy_reason": None if measured else next((t["energy_reason"] for t in summary["tasks"] if t["energy_reason"]), None),
        "energy_flags": [],
        "hardware": {"device": device_slug("cpu"), "name": cpu_model_name(), "eval_device": device_slug("cpu"),
                     "threads": measure_threads, "train_threads": summary.get("threads"),
                     "mixed_precision": summary.get("mixed_precision"),
                     "backbone_precision": run_cfg["model"].get("precision", "fp32"),
                     "cuda": torch.cuda.is_available()},
        "evaluation": eval_cfg["evaluation"],
        "config_hash": run_cfg["config_hash"],
        "data_hash": summary["data_hash"],
        "n_test": sum(matrix["n_test"]),
        "tuned_params": {},
        "continual": {
            "tasks": names,
            "task_metrics": matrix["task_metrics"],
            "accuracy_matrix": matrix["accuracy_matrix"],
            "reference_scores": matrix["reference_scores"],
            "adapter_norm": norms,
            "task_end_steps": [task["last_step"] for task in summary["tasks"]],
            "latency": latency,
            "extra_memory_bytes": stored,
            "stored_files": sorted(str(f.relative_to(final)) for f in final.rglob("*") if f.is_file()),
            "energy_j_per_task": energies,
            "energy_source": energy_source,
        },
    }
    write_json(out_path, record)
    return record


def _read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _latency_overhead(run_cfg, model_dir: Path, final: Path, data: RunData, task: int, samples: int) -> dict:
    """Batch-1 prefill latency of the bare backbone and of the adapted one on the same test
    prompts, interleaved pass by pass so that drift hits both alike; medians, one thread."""
    import statistics

    import torch

    bare = load_stream_backbone(model_dir, run_cfg["model"]).eval()
    method, adapted = _hardened_snapshot(run_cfg, model_dir, final)
    method.set_task(adapted, task)
    prompts = [row["prompt_ids"] for row in data.split("test")]
    device = next(adapted.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    timings = {"backbone": [], "adapter": []}
    with torch.no_grad():
        for k in range(samples + 2):  # two warm-up passes each
            ids = torch.tensor([prompts[k % len(prompts)]], device=device)
            pair = (("backbone", bare), ("adapter", adapted))
            for name, model in pair if k % 2 else pair[::-1]:  # alternate: no order effect on one side
                sync()
                begin = time.perf_counter()
                model(input_ids=ids)
                sync()
                if k >= 2:
                    timings[name].append(time.perf_counter() - begin)
    backbone_ms = 1000 * statistics.median(timings["backbone"])
    adapter_ms = 1000 * statistics.median(timings["adapter"])
    return {"backbone_ms": backbone_ms, "adapter_ms": adapter_ms, "overhead_pct": 100 * (adapter_ms / backbone_ms - 1),
            "samples": samples, "statistic": "median of batch-1 prefill passes", "threads": torch.get_num_threads(),
            "label": LATENCY_LABEL if device.type == "cpu" else torch.cuda.get_device_name(device)}
