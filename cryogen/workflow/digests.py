"""Code digests that make Snakemake rerun a stage when the code it runs changes.

Snakemake reruns a job when its params change, but it does not see the code of the package a
shell command runs. Each stage gets as a param a digest of the source of the cryogen modules it
runs: its entry modules (STAGES) and everything they import from cryogen, found by reading their
import statements (without importing them). The digest is of the files' bytes, so any edit to
those modules, comments included, reruns the stage and what follows it. cryogen/__init__.py (the
version string) and cryogen.cli (thin argument parsing) are left out: a new version number alone
reruns nothing. cryogen.workflow is no stage's import, so editing it (this module) reruns nothing.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import cryogen

__all__ = ["STAGES", "code_version", "sources", "stage_digests"]

# The modules whose code does each stage (the CLI verb of the same name calls into them).
STAGES: dict[str, tuple[str, ...]] = {
    "simulate": ("cryogen.sim.simulate", "cryogen.io.mrc"),
    "backproject": ("cryogen.backproject",),
    "chunk": ("cryogen.tiling",),
    "train": ("cryogen.method.loop",),
    "reconstruct": ("cryogen.restore.reconstruct", "cryogen.restore.parallel"),
    "stitch": ("cryogen.tiling",),
    "report": ("cryogen.qc.figures", "cryogen.qc.geometry"),  # geometry: --tilt-range auto
    "export": ("cryogen.io.ome_zarr",),
}


def _skipped(name: str) -> bool:
    """Modules followed for their imports but not digested."""
    return name == "cryogen" or name == "cryogen.cli" or name.startswith("cryogen.cli.")


def _imports(name: str, origin: str) -> set[str]:
    """Names that module `name` (source file `origin`) imports from cryogen, relative imports
    resolved; `from m import x` gives both m and m.x, as x may be a submodule."""
    tree = ast.parse(Path(origin).read_text(), filename=origin)
    package = name if origin.endswith("__init__.py") else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "cryogen")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "cryogen":
                continue
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def _source_file(name: str) -> str | None:
    """The .py file of module `name` of the cryogen package; None for a name that is no module
    file (the package itself, a class or function named by `from m import x`)."""
    parts = name.split(".")[1:]
    for base in cryogen.__path__:
        for candidate in (Path(base, *parts).with_suffix(".py"), Path(base, *parts, "__init__.py")):
            if parts and candidate.is_file():
                return str(candidate)
    return None


def sources(*entries: str) -> list[tuple[str, str]]:
    """(module, source file) of `entries` and of the cryogen modules they import, transitively,
    sorted: what code_version digests."""
    found: dict[str, str | None] = {}
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        origin = found[name] = _source_file(name)
        if origin:
            todo.extend(sorted(_imports(name, origin) - found.keys()))
    return sorted((n, o) for n, o in found.items() if o and not _skipped(n))


def code_version(*entries: str) -> str:
    """Digest (16 hex digits) of the sources of `entries` (names and bytes); "version-X.Y.Z"
    where no source is readable."""
    digest = hashlib.sha256()
    found = sources(*entries)
    if not found:
        return f"version-{cryogen.__version__}"
    for name, origin in found:
        digest.update(name.encode() + b"\0" + Path(origin).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def stage_digests() -> dict[str, str]:
    """code_version of every stage of STAGES, by stage name."""
    return {stage: code_version(*entries) for stage, entries in STAGES.items()}
