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
do not rerun anything; any change to code or docstrings does. Parsing is cached: a
workflow parse hashes a few dozen files in milliseconds, without importing them.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "wattpeft"
PACKAGE_DIR = Path(__file__).resolve().parent


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


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def imported_modules(path: Path, package_dir: Path = PACKAGE_DIR) -> set[str]:
    """Dotted names this file may import: each `import X`, `from X import Y` as X and X.Y."""
    inside = path.resolve().is_relative_to(package_dir)
    names: set[str] = set()
    for node in ast.walk(_parse(path)):
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


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_closure(entry: Path, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Every wattpeft source file that `entry` imports, directly or not (sorted)."""
    seen: set[Path] = set()
    pending = [Path(entry)]
    while pending:
        current = pending.pop()
        for name in imported_modules(current, package_dir):
            for module in _with_parents(name):
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
            digest.update(ast.dump(_parse(path)).encode())
        else:
            digest.update(path.read_bytes())
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
