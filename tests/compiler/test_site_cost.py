"""A layer's cost on the target, costed on the layer alone, equals its share of the whole model's cost."""

from __future__ import annotations

import numpy as np
import pytest

from pimc.app.compile import target_cost_fn
from pimc.compiler.layerwise import Site, dense_macs
from pimc.compiler.loader import load_model
from pimc.compiler.modelio import copy_model
from pimc.compiler.passbase import PassContext
from pimc.compiler.pipeline import PassManager, build_pipeline
from pimc.compiler.site_cost import SiteCoster
from pimc.compiler.target import get_target
from pimc.models import bundled_model_path
from pimc.passes.decompose.decompose import Decompose


def _normalised():
    model = load_model(str(bundled_model_path()))
    passes = build_pipeline([("fold-constants", {}), ("eliminate-identity", {}), ("fold-batchnorm", {})])
    return PassManager(passes, PassContext()).run(model)


@pytest.mark.parametrize("target_name", ["escalate", "cim", "cmp-pim"])
def test_rewriting_one_layer_changes_the_model_cost_by_the_layer_cost_change(target_name: str) -> None:
    model = _normalised()
    target = get_target(target_name)
    cost = target_cost_fn(target, target.config())
    coster = SiteCoster(model, cost)
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.name]
    node = convs[1]
    weight_size = int(np.prod([d for d in next(i for i in model.graph.initializer if i.name == node.input[1]).dims]))
    site = Site(node.name, node.input[0], dense_macs(node, weight_size, {}))
    decompose = Decompose(rank=2)
    candidate = decompose._propose(model, site, None, None)[0]
    whole_before = cost(model)
    rewritten = copy_model(model)
    candidate.apply(rewritten)
    whole_after = cost(rewritten)
    layer_before = coster.base(node.name)
    layer_after = coster.rewritten(node.name, candidate.apply)
    for k in range(2):
        assert whole_after[k] - whole_before[k] == pytest.approx(layer_after[k] - layer_before[k], rel=1e-6, abs=1e-15)
