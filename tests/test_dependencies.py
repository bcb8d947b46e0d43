"""pyproject.toml matches the code: every declared dependency is imported outside the tests, and every package
folder is listed for installation."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
MODULE_OF = {"scikit-learn": "sklearn", "scikit-image": "skimage", "pyyaml": "yaml",  # distribution → import
             "optuna": "ray.tune.search.optuna"}  # Ray Tune's OptunaSearch imports optuna itself


def _declared() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [re.split(r"[\[<>=~! ]", item, maxsplit=1)[0].lower() for item in project["dependencies"]]


def test_every_declared_dependency_is_imported_outside_the_tests():
    sources = [p for p in ROOT.rglob("*.py") if not {"tests", ".venv", "build"} & set(p.relative_to(ROOT).parts)]
    text = "\n".join(p.read_text() for p in sources)
    unused = [name for name in _declared()
              if not re.search(rf"^\s*(import|from)\s+{re.escape(MODULE_OF.get(name, name))}\b", text, re.M)]
    assert not unused


def test_every_package_folder_is_installed():
    folders = {p.parent.relative_to(ROOT) for p in ROOT.rglob("__init__.py")
               if not {"tests", ".venv", "build"} & set(p.relative_to(ROOT).parts)}
    packages = {".".join(("pimc", *folder.parts)) for folder in folders}
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert packages == set(declared)
