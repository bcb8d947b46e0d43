"""Every bash and python block in the README and docs/ runs as written, in a scratch folder where the files it
names exist: ``model.onnx`` is the bundled digits model, ``calib.npz`` / ``test.npz`` digits arrays, and so
on (``_scratch``). A block preceded by ``<!-- docs-test: skip ... -->`` is not run (the set-up commands,
which CI runs itself), one preceded by ``<!-- docs-test: slow -->`` only with ``-m slow``. The exporter
guide's blocks have their own test (``test_guide_exporters.py``)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
OWN_TEST = {ROOT / "docs" / "guide" / "exporters.md"}
FENCE = re.compile(r"(<!-- docs-test: (\w+)[^>]*-->\n)?```(bash|python)\n(.*?)```", re.S)


def _blocks(mark: str | None) -> list[tuple[str, str, str]]:
    """(where, language, code) of every block whose marker is ``mark`` (None: unmarked)."""
    found = []
    for page in PAGES:
        if page in OWN_TEST:
            continue
        text = page.read_text()
        for match in FENCE.finditer(text):
            if match.group(2) == mark:
                line = text[: match.start(3)].count("\n") + 1
                found.append((f"{page.relative_to(ROOT)}:{line}", match.group(3), match.group(4)))
    return found


def _scratch(folder: Path) -> dict[str, str]:
    """The files the documented commands name, and the environment that runs ``pimc`` as this interpreter."""
    from pimc.models import TWINS, bundled_model_path, twin_path
    from pimc.runtime.datasets import digits_split

    model = bundled_model_path()
    for name in ("model.onnx", "a.onnx", "models/digits_cnn.onnx"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(model, folder / name)
    shutil.copy(twin_path(TWINS["escalate"][0]), folder / "penni.onnx")
    _fully_convolutional(folder / "fcn.onnx")
    shutil.copytree(ROOT / "examples", folder / "examples")
    spec = (ROOT / "examples" / "sweep_digits.toml").read_text()
    (folder / "spec.toml").write_text(spec.replace("../models/digits_cnn.onnx", "models/digits_cnn.onnx"))
    for split, name in (("train", "calib.npz"), ("test", "test.npz")):
        x, y = digits_split(split)
        np.savez(folder / name, x=x.reshape(-1, 1, 8, 8).astype(np.float32), y=y)
    report = subprocess.run([sys.executable, "-m", "pimc", "compile", str(model), "--target", "escalate",
                             "--report", "main.json"], cwd=folder, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    for name in ("change.json", "a.json", "b.json"):
        shutil.copy(folder / "main.json", folder / name)
    json.loads((folder / "main.json").read_text())
    bin_dir = folder / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "pimc"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pimc "$@"\n')
    shim.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(folder), "MPLBACKEND": "Agg"}


def _fully_convolutional(path: Path) -> None:
    """A tiny conv net whose input ``x`` has symbolic height and width (for ``--input-shape``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([conv], "fcn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, "h", "w"])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _python_namespace() -> dict:
    """``model`` and ``train_loader`` as the README's library example assumes them: a small trained-looking
    3×32×32 CNN and a loader of 64 labelled images."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    data = torch.utils.data.TensorDataset(torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)))
    return {"model": model, "train_loader": torch.utils.data.DataLoader(data, batch_size=32)}


def _run(where: str, language: str, code: str, folder: Path, env: dict[str, str]) -> None:
    if language == "bash":
        done = subprocess.run(["bash", "-e", "-c", code], cwd=folder, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{where}: exit {done.returncode}\n{done.stderr[-2000:]}"
        return
    import os

    cwd = Path.cwd()
    os.chdir(folder)
    try:
        exec(compile(code, where, "exec"), _python_namespace())
    finally:
        os.chdir(cwd)


def test_the_docs_have_runnable_blocks():
    assert len(_blocks(None)) >= 8
    assert {where.split(":")[0] for where, _, _ in _blocks("skip")} >= {"README.md"}


@pytest.mark.parametrize(("where", "language", "code"), _blocks(None), ids=[b[0] for b in _blocks(None)])
def test_block_runs_as_written(where, language, code, tmp_path, single_torch_thread):
    _run(where, language, code, tmp_path, _scratch(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize(("where", "language", "code"), _blocks("slow"), ids=[b[0] for b in _blocks("slow")])
def test_slow_block_runs_as_written(where, language, code, tmp_path, single_torch_thread):
    _run(where, language, code, tmp_path, _scratch(tmp_path))
