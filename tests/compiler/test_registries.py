"""The declared registries of passes and targets: every module that registers one is declared under the
name it registers, a pass is found without importing the others, and no pass module imports torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from pimc.compiler.errors import PimcError
from pimc.compiler.passbase import all_passes, declared_passes, get_pass

PASSES_DIR = Path(__file__).resolve().parents[2] / "passes"


def _declared_names(path: Path, base: str) -> list[str]:
    """The ``name`` of every ``class X(<base>, name="x")`` declared in a source file."""
    return [keyword.value.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ClassDef)
            and any(getattr(b, "id", None) == base for b in node.bases)
            for keyword in node.keywords if keyword.arg == "name"]


def test_every_registering_module_is_declared_under_its_pass_names():
    found = {name: "pimc." + ".".join(path.relative_to(PASSES_DIR.parent).with_suffix("").parts)
             for path in PASSES_DIR.rglob("*.py") for name in _declared_names(path, "Pass")}
    assert found == declared_passes()


def test_every_declared_pass_loads_under_its_name():
    assert all(cls.name == name for name, cls in all_passes().items())


def test_unknown_pass_is_a_clear_error():
    with pytest.raises(PimcError, match="unknown pass 'nope'"):
        get_pass("nope")


def test_a_pass_loads_without_the_other_passes_or_torch():
    code = ("import sys\nfrom pimc.compiler.passbase import get_pass\nget_pass('shrink')\n"
            "print(sorted(m for m in sys.modules if m.startswith('pimc.passes.') and m.count('.') == 3))\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert "pimc.passes.pattern.pattern_prune" not in out[0] and "shrink" in out[0]
    assert out[1] == "False"


def test_no_pass_module_imports_torch():
    code = ("import sys\nfrom pimc.compiler.passbase import all_passes\nall_passes()\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_target_module_is_declared_under_its_target_name():
    from pimc.compiler.target import all_targets, declared_targets

    backends = PASSES_DIR.parent / "backends"
    found = {}
    for path in backends.rglob("*.py"):
        for name in _declared_names(path, "Target"):
            parts = path.relative_to(backends.parent).with_suffix("").parts
            found[name] = "pimc." + ".".join(parts[:-1] if parts[-1] in ("target", "__init__") else parts)
    assert found == declared_targets()
    assert all(cls.name == name for name, cls in all_targets().items())
