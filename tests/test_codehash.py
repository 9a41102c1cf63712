"""Code versions come from the imports: a rule's hash covers every wattpeft module it imports."""

import os
from pathlib import Path

from wattpeft import codehash

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "wattpeft"


def closure_of(script: str) -> set[str]:
    return {codehash.module_name(p) for p in codehash.import_closure(ROOT / "scripts" / f"{script}.py")}


def test_closure_follows_function_level_and_relative_imports():
    finetune = closure_of("finetune")
    # stages/finetune.py imports the trainer inside a function, the trainer imports checkpoint.
    for module in ("wattpeft.stages.finetune", "wattpeft.training.trainer", "wattpeft.training.checkpoint",
                   "wattpeft.training.validation", "wattpeft.data.loading", "wattpeft.stages.common",
                   "wattpeft.stages", "wattpeft.training", "wattpeft"):
        assert module in finetune, module
    assert not any(m.startswith("wattpeft.report") for m in finetune)


def test_figures_do_not_depend_on_training():
    figure = closure_of("figure")
    assert "wattpeft.report.figures" in figure
    assert not any(m.startswith(("wattpeft.training", "wattpeft.methods.")) for m in figure)


def fake_package(tmp_path: Path) -> Path:
    pkg = tmp_path / "wattpeft"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("def f():\n    from . import b\n    return b.g()\n")
    (pkg / "sub" / "b.py").write_text("def g():\n    return 1  # one\n")
    (pkg / "lonely.py").write_text("X = 1\n")
    (tmp_path / "script.py").write_text("from wattpeft.sub.a import f\n")
    return pkg


def test_a_module_is_covered_as_soon_as_something_imports_it(tmp_path):
    pkg = fake_package(tmp_path)
    script = tmp_path / "script.py"
    names = {codehash.module_name(p, pkg) for p in codehash.import_closure(script, pkg)}
    assert names == {"wattpeft", "wattpeft.sub", "wattpeft.sub.a", "wattpeft.sub.b"}
    before = codehash.code_version(script, package_dir=pkg)
    (pkg / "sub" / "b.py").write_text("from wattpeft import lonely\ndef g():\n    return 1  # one\n")
    assert "wattpeft.lonely" in {codehash.module_name(p, pkg) for p in codehash.import_closure(script, pkg)}
    assert codehash.code_version(script, package_dir=pkg) != before


def test_comments_do_not_change_the_version_code_does(tmp_path):
    pkg = fake_package(tmp_path)
    script = tmp_path / "script.py"
    before = codehash.code_version(script, package_dir=pkg)
    (pkg / "sub" / "b.py").write_text("def g():\n    return 1  # another comment\n\n")
    assert codehash.code_version(script, package_dir=pkg) == before
    (pkg / "sub" / "b.py").write_text("def g():\n    return 2\n")
    assert codehash.code_version(script, package_dir=pkg) != before


def test_parsed_facts_are_cached_across_processes_and_follow_edits(tmp_path, monkeypatch):
    """A no-op dry run parses nothing; an edit of the same size and timestamp still counts."""
    pkg = fake_package(tmp_path)
    script = tmp_path / "script.py"
    (tmp_path / ".snakemake").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(codehash, "_FACTS", codehash._FactsCache())
    before = codehash.code_version(script, package_dir=pkg)
    assert codehash.FACTS_CACHE.is_file()
    # A fresh process (a new cache object) that may not parse: it reads the facts file.
    monkeypatch.setattr(codehash, "_FACTS", codehash._FactsCache())
    monkeypatch.setattr(codehash.ast, "parse", lambda *a, **k: (_ for _ in ()).throw(AssertionError("parsed")))
    assert codehash.code_version(script, package_dir=pkg) == before
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    b = pkg / "sub" / "b.py"
    stat = b.stat()
    b.write_text("def g():\n    return 7  # one\n")  # same size as before
    os.utime(b, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    monkeypatch.setattr(codehash, "_FACTS", codehash._FactsCache())
    assert codehash.code_version(script, package_dir=pkg) != before
