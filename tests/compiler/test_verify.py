"""compare_outputs: NaN/inf outputs are failures, never a zero error; exactness tolerance by dtype; --verify
fails a pass whose outputs turn NaN."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import conv_bn_net, feeds_for

from pimc.compiler.errors import PassError
from pimc.compiler.graph import get_initializer, set_initializer
from pimc.compiler.loader import normalize
from pimc.compiler.passbase import Pass, PassContext, PassResult
from pimc.compiler.pipeline import PassManager
from pimc.compiler.verify import compare_outputs


def _one(ref: np.ndarray, new: np.ndarray):
    return compare_outputs([[ref]], [[new]])


def test_nan_in_candidate_is_a_failure_not_zero_error():
    ref = np.ones((2, 3), np.float32)
    new = ref.copy()
    new[0, 0] = np.nan
    cmp = _one(ref, new)
    assert cmp.nonfinite == 1 and cmp.failure() and not cmp.within(1.0)


def test_all_nan_candidate_fails():
    ref = np.ones(4, np.float32)
    cmp = _one(ref, np.full(4, np.nan, np.float32))
    assert cmp.nonfinite == 4 and cmp.failure()


def test_inf_in_candidate_fails_and_matching_nan_agrees():
    ref = np.array([1.0, np.nan, np.inf], np.float32)
    assert _one(ref, ref.copy()).failure() is None
    assert _one(ref, np.array([np.inf, np.nan, np.inf], np.float32)).nonfinite == 1
    assert _one(ref, np.array([1.0, 2.0, np.inf], np.float32)).nonfinite == 1


def test_float16_outputs_get_a_wider_exactness_tolerance():
    ref = np.linspace(-1, 1, 64).astype(np.float16)
    new = (ref.astype(np.float32) * (1 + 4e-3)).astype(np.float16)
    cmp = _one(ref, new)
    assert 1e-4 < cmp.max_rel_err < 1e-2
    assert cmp.tolerance(1e-4) == 1e-2 and cmp.within(1e-4)
    same = _one(ref.astype(np.float32), new.astype(np.float32))
    assert same.tolerance(1e-4) == 1e-4 and not same.within(1e-4)


class _Poison(Pass):
    """A lossy pass gone wrong: its weights become NaN."""

    name = "poison"

    def run(self, model, ctx):
        weight = get_initializer(model.graph, "w1")
        set_initializer(model.graph, "w1", np.full_like(weight, np.nan))
        return PassResult(model, True)


def test_verify_fails_a_pass_whose_outputs_become_nan():
    model = normalize(conv_bn_net())
    manager = PassManager([_Poison()], PassContext(), verify=True, verify_feeds=[feeds_for(model)])
    with pytest.raises(PassError, match="pass 'poison': --verify: .* NaN or infinite"):
        manager.run(model)
