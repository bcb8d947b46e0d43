"""The vectorised escalate cost (``cost_many``, the fast path's chunks) equals the scalar
``target.cost(target.lower(model, hw), hw)`` and its baselines at every sampled hardware point."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from pimc.backends.pointwise import ceil_div, select, vmax
from pimc.sweep.fastpath import compile_group, cost_points, point_cost, to_rows
from pimc.sweep.trial import cost_metrics

MODEL = str(Path(__file__).resolve().parents[2] / "models" / "digits_cnn.onnx")

#: The benchmark's five axes, then every parameter the points are grouped by and a few more.
AXES = {
    "dense_rows": [4, 16, 48], "dense_cols": [3, 16, 64], "input_buffer_kb": [0.5, 8.0, 512.0],
    "dram_gbps": [1.6, 25.6], "clock_mhz": [250.0, 1000.0],
    "basis_rows": [2, 8, 32], "basis_cols": [4, 16, 5], "coef_rows": [3, 16], "coef_cols": [1, 8, 24],
    "intermediate_buffer_kb": [0.25, 16.0], "output_buffer_kb": [0.5, 64.0], "act_bits": [4, 8],
    "index_overhead_cycles": [0, 2], "activation_skipping": [True, False], "onchip_activations": [False, True],
}
FIVE = list(AXES)[:5]


def points(names: list[str], count: int, seed: int = 0) -> list[dict]:
    grid = list(itertools.product(*(AXES[n] for n in names)))
    picked = np.random.default_rng(seed).choice(len(grid), size=min(count, len(grid)), replace=False)
    return [{"model": MODEL, "target": "escalate", "key": f"k{i}", "index": i,
             "axes": {f"hw.escalate.{n}": v for n, v in zip(names, grid[j], strict=True)}}
            for i, j in enumerate(picked)]


@pytest.fixture(scope="module", params=["dense", "decomposed"])
def group(request):
    """The bundled model after an escalate compile: as is (no data: every layer dense), or decomposed at rank
    3 with its activation zeros measured on digits."""
    if request.param == "dense":
        compiled = compile_group(points(FIVE, 1)[0], None, None, None, 0, MODEL)
    else:
        point = {"model": MODEL, "target": "escalate", "axes": {"decompose.rank": 3}}
        compiled = compile_group(point, "digits", None, None, 0, MODEL)
    assert compiled.model is not None, compiled.error
    return compiled


def expected(group, point: dict) -> dict:
    from pimc.compiler.target import get_target
    from pimc.sweep.fastpath import prepared

    ready = prepared(group)
    return cost_metrics(point_cost(get_target("escalate"), ready.model, ready.normalized, group.input_macs, point))


@pytest.mark.parametrize("names, count", [(FIVE, 40), (list(AXES), 60)], ids=["five-axes", "all-axes"])
def test_vectorised_cost_equals_the_scalar_cost(group, names, count):
    sample = points(names, count)
    rows = to_rows(cost_points(group, sample))
    assert len(rows) == len(sample)
    varied = set()
    for point, row in zip(sample, rows, strict=True):
        want = expected(group, point)
        assert row["status"] in ("ok", "over_budget"), row["error"]
        assert {"speedup_vs.dense", "speedup_vs.sparse", "speedup_vs.dense_same_shape",
                "energy_gain_vs.sparse_same_shape"} <= set(want)
        for name, value in want.items():
            assert row[name] == pytest.approx(value, rel=1e-9), (name, point["axes"])
        varied.add((row["latency_s"], row["energy_j"]))
    assert len(varied) > len(sample) // 2  # the axes move the cost


def test_the_two_models_take_the_two_paths(group):
    from pimc.sweep.fastpath import prepared

    ready = prepared(group)
    kinds = [plan.kind for plan in ready.target.lower(ready.model, None).layers]
    assert ("decomposed" in kinds) == (group.metrics["accuracy"] is not None)  # the decomposed one has data


def test_pointwise_helpers_keep_scalar_types():
    assert ceil_div(7, 2) == 4 and isinstance(ceil_div(7.0, 2), int)
    assert select(True, 1, 2.0) == 1 and isinstance(select(False, 1, 2.0), float)
    assert vmax(3, 2) == 3 and isinstance(vmax(3, 2), int)
    np.testing.assert_array_equal(ceil_div(np.array([7, 8]), 2), [4, 4])
    np.testing.assert_array_equal(select(np.array([True, False]), 1.0, np.array([5.0, 6.0])), [1.0, 6.0])
