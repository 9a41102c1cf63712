"""Code versions for Snakemake params: a hash of every wattpeft module a rule imports.

The modules come from the imports themselves, never from a hand-kept list: starting at a
rule's script (or a method's model module), every `import wattpeft...` and relative import,
at module level or inside a function, is followed through the package, and the
`__init__.py` of every package on the way is included (Python runs it on import). A module
added later is therefore covered as soon as something imports it.

Only imports that the source names are seen: a module loaded by name at run time (the
method registry's `importlib.import_module`) is hashed separately, per method
(`wattpeft.methods.<name>.model`), so editing one method reruns only that method's runs.

The hash is taken over each module's syntax tree (`ast.dump`), so comments and formatting
do not rerun anything; any change to code or docstrings does. Each file is parsed once per
process, and its facts (tree digest, imports) are kept in `FACTS_CACHE` keyed by path and
a hash of its bytes, so a no-op dry run parses nothing (hashing bytes is far cheaper than
parsing) and an edited file is always parsed again, whatever its timestamps say.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import tempfile
from pathlib import Path

PACKAGE = "wattpeft"
PACKAGE_DIR = Path(__file__).resolve().parent
# Per-file facts across invocations (relative to the working directory: Snakemake's own
# metadata folder). Losing it costs one re-parse; a stale entry is impossible because each
# entry holds the hash of the bytes it was parsed from.
FACTS_CACHE = Path(".snakemake") / "wattpeft-codehash.json"


def module_file(module: str, package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The source file of a dotted wattpeft module name, or None when it is not one."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    rel = path.resolve().relative_to(package_dir).with_suffix("")
    parts = [PACKAGE, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path, package_dir: Path) -> str:
    name = module_name(path, package_dir)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


class _FactsCache:
    """(tree digest, imported names) per file, memoised in memory and in FACTS_CACHE."""

    def __init__(self) -> None:
        self.entries: dict[str, list] | None = None
        self.dirty = False

    def _load(self) -> dict[str, list]:
        if self.entries is None:
            try:
                self.entries = json.loads(FACTS_CACHE.read_text())
            except (OSError, ValueError):
                self.entries = {}
        return self.entries

    def get(self, path: Path, package_dir: Path) -> tuple[str, list[str]]:
        source = path.read_bytes()
        key = f"{path.absolute()}|{package_dir}"
        stamp = hashlib.sha256(source).hexdigest()
        entry = self._load().get(key)
        if entry is None or entry[0] != stamp:
            tree = ast.parse(source, filename=str(path))
            digest = hashlib.sha256(ast.dump(tree).encode()).hexdigest()
            entry = [stamp, digest, sorted(_imports_in(tree, path, package_dir))]
            self.entries[key] = entry
            self.dirty = True
        return entry[1], entry[2]

    def save(self) -> None:
        """Write the cache atomically where its folder exists (a workflow's .snakemake/),
        dropping files that no longer exist. Concurrent parses (cluster jobs) each replace
        the whole file; the last one wins, and a lost entry only costs a re-parse."""
        if not self.dirty or not FACTS_CACHE.parent.is_dir():
            return
        live = {key: entry for key, entry in self.entries.items()
                if Path(key.partition("|")[0]).is_file()}
        fd, tmp = tempfile.mkstemp(dir=FACTS_CACHE.parent, prefix=f"{FACTS_CACHE.name}.")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(live, handle)
            os.replace(tmp, FACTS_CACHE)
            self.dirty = False
        except OSError:
            Path(tmp).unlink(missing_ok=True)


_FACTS = _FactsCache()


def _imports_in(tree: ast.Module, path: Path, package_dir: Path) -> set[str]:
    inside = path.resolve().is_relative_to(package_dir)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if not inside:
                    continue
                anchor = _package_of(path, package_dir).split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def imported_modules(path: Path, package_dir: Path = PACKAGE_DIR) -> set[str]:
    """Dotted names this file may import: each `import X`, `from X import Y` as X and X.Y."""
    return set(_FACTS.get(path, package_dir)[1])


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_closure(entry: Path, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Every wattpeft source file that `entry` imports, directly or not (sorted)."""
    seen: set[Path] = set()
    looked_up: set[str] = set()  # each dotted name is looked up on disk once per closure
    pending = [Path(entry)]
    while pending:
        current = pending.pop()
        for name in imported_modules(current, package_dir):
            for module in _with_parents(name):
                if module in looked_up:
                    continue
                looked_up.add(module)
                found = module_file(module, package_dir)
                if found is not None and found not in seen:
                    seen.add(found)
                    pending.append(found)
    return sorted(seen)


def files_version(files: list[Path], package_dir: Path = PACKAGE_DIR) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        label = module_name(path, package_dir) if path.resolve().is_relative_to(package_dir) else path.name
        digest.update(label.encode())
        if path.suffix == ".py":
            digest.update(_FACTS.get(path, package_dir)[0].encode())
        else:
            digest.update(path.read_bytes())
    _FACTS.save()
    return digest.hexdigest()[:16]


def code_version(entry: str | Path, *data_files: str | Path, package_dir: Path = PACKAGE_DIR) -> str:
    """Hash of `entry`'s wattpeft import closure plus any data files it reads (JSON tables)."""
    files = import_closure(Path(entry), package_dir)
    files += [package_dir / f for f in data_files]
    return files_version(files, package_dir)


def module_version(module: str, package_dir: Path = PACKAGE_DIR) -> str:
    """Hash of one module and everything it imports (a method's `model` module)."""
    path = module_file(module, package_dir)
    if path is None:
        raise ModuleNotFoundError(f"{module} is not a wattpeft module under {package_dir}")
    return files_version([path, *import_closure(path, package_dir)], package_dir)
