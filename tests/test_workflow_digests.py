"""cryogen.workflow.digests: what each stage's code version covers (the modules it imports,
transitively; not cryogen/__init__.py, cryogen.cli or cryogen.workflow) and when it changes: any
edit of such a module, comments included. Milliseconds: no Snakemake."""

from __future__ import annotations

from pathlib import Path

import pytest

import cryogen
from cryogen.workflow import STAGES, code_version, sources, stage_digests

FAKE = {
    "__init__.py": "__version__ = '1.0'\n",
    "a.py": "import numpy\nfrom .b import thing\nfrom . import cli\n",
    "b.py": "import cryogen.sub.c\nthing = 1\n",
    "sub/__init__.py": "",
    "sub/c.py": "from ..d import f  # relative, two levels\nfrom .. import __version__\n",
    "d.py": "def f():\n    return 1\n",
    "unused.py": "x = 1\n",
    "cli/__init__.py": "from . import verb\n",
    "cli/verb.py": "from ..unused import x\n",
}


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A small cryogen package in tmp_path, searched instead of the real one; returns its folder."""
    root = tmp_path / "cryogen"
    for name, text in FAKE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    monkeypatch.setattr(cryogen, "__path__", [str(root)])
    return root


def test_sources_follow_imports_transitively(fake):
    names = [name for name, _ in sources("cryogen.a")]
    # cli is followed (it imports unused) but not digested, nor the package's __init__.py; `import
    # cryogen.sub.c` names sub.c alone (sub/__init__.py is left out, as Python runs it but names it not)
    assert names == ["cryogen.a", "cryogen.b", "cryogen.d", "cryogen.sub.c", "cryogen.unused"]
    assert dict(sources("cryogen.a"))["cryogen.sub.c"] == str(fake / "sub/c.py")
    assert [name for name, _ in sources("cryogen.sub")] == ["cryogen.sub"]  # a package's __init__.py


@pytest.mark.parametrize(
    "edited, changes",
    [
        ("d.py", True),  # imported through b -> sub.c -> d
        ("sub/c.py", True),
        ("a.py", True),
        ("unused.py", True),  # imported by cli.verb: followed through cli
        ("cli/verb.py", False),
        ("__init__.py", False),  # a new version number alone
    ],
)
def test_digest_changes_with_the_code_it_covers(fake, edited, changes):
    before = code_version("cryogen.a")
    with open(fake / edited, "a") as f:
        f.write("# a comment is a change too\n")
    assert (code_version("cryogen.a") != before) is changes


def test_digest_of_unrelated_entry_and_fallback(fake):
    before = code_version("cryogen.d")
    (fake / "a.py").write_text("import cryogen.d\n")
    assert code_version("cryogen.d") == before
    assert code_version("cryogen.nope") == f"version-{cryogen.__version__}"  # no readable source


def test_every_stage_entry_is_a_module_of_the_package():
    """A renamed module would silently drop out of its stage's digest."""
    for stage, entries in STAGES.items():
        found = dict(sources(*entries))
        for entry in entries:
            assert entry in found, (stage, entry)


def test_stage_digests_cover_the_stage_code():
    covered = {stage: {name for name, _ in sources(*entries)} for stage, entries in STAGES.items()}
    assert {"cryogen.method.step", "cryogen.method.checkpoints", "cryogen.method.patches"} <= covered["train"]
    assert {"cryogen.model.nets", "cryogen.method.solver"} <= covered["reconstruct"]
    assert "cryogen.model.nets" not in covered["report"] | covered["chunk"] | covered["export"]
    for names in covered.values():
        assert not any(n == "cryogen" or n.startswith(("cryogen.cli", "cryogen.workflow")) for n in names)
    digests = stage_digests()
    assert digests["chunk"] == digests["stitch"] and len(set(digests.values())) == len(STAGES) - 1
    assert all(len(d) == 16 for d in digests.values())


def test_real_sources_are_files_of_the_package():
    package = Path(cryogen.__file__).parent
    for _, origin in sources(*STAGES["reconstruct"]):
        assert Path(origin).is_relative_to(package) and origin.endswith(".py")
