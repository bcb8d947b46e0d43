"""CMP-PIM ratios on the CMPNET-style network: energy/latency vs the cnn and lbcnn baselines, their
derivation, and how each documented parameter moves them (×½ and ×2 sweeps).

    python benchmarks/cmp_pim_ratios.py --cmpnet cmpnet.onnx [--cnn cmpnet_cnn.onnx] [--hw hw.toml]
    python benchmarks/cmp_pim_ratios.py --anchors-sweep 1,2,4,8      # untrained CMPNETs, q anchors/channel

``--cnn`` (the plain twin, exported by ``pimc export comparator --model cmpnet-cnn``) is compiled too, as a
check that the cnn baseline derived from the annotations equals the real plain network's cost.
``derivation`` lists each network's energy by op kind (µJ) and the gain there would be if one kind of
CMPNET energy were free (how much each kind bounds the ratio).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from pimc.app.compile import CompileOptions, compile_model
from pimc.backends.cmp_pim import CmpPimConfig, mac_cycles, ternary_add_cycles
from pimc.compiler.baselines import cost_with_baselines
from pimc.compiler.target import get_target

PUBLISHED = {"energy_gain_vs_cnn": 94.0, "energy_gain_vs_lbcnn": 3.0, "speedup_vs_cnn": 4.3}
SWEEP = ("e_move_fj_per_bit", "bus_bits", "e_write_fj", "e_sense_fj", "static_power_w", "subarrays",
         "weight_bits", "act_bits", "baseline_bits")


def ratios(cost: dict) -> dict[str, float]:
    return {"energy_gain_vs_cnn": cost["energy_gain_vs"]["cnn"],
            "energy_gain_vs_lbcnn": cost["energy_gain_vs"]["lbcnn"], "speedup_vs_cnn": cost["speedup_vs"]["cnn"],
            "speedup_vs_lbcnn": cost["speedup_vs"]["lbcnn"]}


def derivation(cost: dict) -> dict[str, dict[str, float]]:
    """Each network's energy by op kind (µJ) and each kind's share of the cnn / lbcnn energy gains."""
    parts = {"cmpnet": cost["energy_breakdown_j"], **baseline_breakdowns(cost)}
    out: dict[str, dict[str, float]] = {name: {k: round(v * 1e6, 3) for k, v in bd.items()} for name, bd in parts.items()}
    total = sum(parts["cmpnet"].values())
    for base in ("cnn", "lbcnn"):
        out[f"gain_vs_{base}_if_only_kind_were_free"] = {
            k: round(sum(parts[base].values()) / (total - v), 2) for k, v in parts["cmpnet"].items() if total > v}
    return out


def baseline_breakdowns(cost: dict) -> dict[str, dict[str, float]]:
    return {k: v["energy_breakdown_j"] for k, v in cost["baselines"].items()}


def network_extras(path: str, hw: str | None) -> dict[str, dict[str, float]]:
    """Work, movement and cycle split of CMPNET and of both baselines (costed on the same input model)."""
    from pimc.backends.cmp_pim import network_cost
    from pimc.compiler.baselines import normalize
    from pimc.compiler.loader import load_model

    config = get_target("cmp-pim").config(hw)
    model = normalize(load_model(path))
    nets = {"cnn": network_cost(model, config, "cnn").extra["cmp_pim"],
            "lbcnn": network_cost(model, config, "lbcnn").extra["cmp_pim"]}
    keys = ("work_column_cycles", "movement_bits", "compute_cycles", "movement_cycles")
    return {key: {name: extra[key] for name, extra in nets.items()} for key in keys}


def cost_of(path: str, hw: str | None = None) -> dict:
    _, report = compile_model(CompileOptions(input=path, target="cmp-pim", passes="cleanup", hw=hw,
                                             write_output=False))
    return report["cost"]


def sweep(path: str) -> dict[str, dict[str, dict[str, float]]]:
    target = get_target("cmp-pim")
    _, report = compile_model(CompileOptions(input=path, target="cmp-pim", passes="cleanup", write_output=False))
    from pimc.compiler.loader import load_model

    model = load_model(path)
    base = CmpPimConfig()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in SWEEP:
        value = getattr(base, name)
        out[name] = {}
        for factor in (0.5, 2.0):
            changed = type(value)(value * factor) if isinstance(value, int) else value * factor
            hw = dataclasses.replace(base, **{name: max(changed, 1) if isinstance(value, int) else changed})
            cost = cost_with_baselines(target, model, model, hw).to_dict()
            out[name][f"x{factor:g}"] = {k: round(v, 2) for k, v in ratios(cost).items()}
    return out


def anchors_sweep(values: list[int], hw: str | None) -> dict[str, dict[str, float]]:
    """Ratios of untrained CMPNETs with q anchors per channel (the cost does not depend on training)."""
    import tempfile
    from pathlib import Path

    import torch

    from pimc.models.cmpnet import INPUT_SHAPE, build_cmpnet
    from pimc.passes.comparator.exporter import export_lbc_onnx

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for q in values:
            torch.manual_seed(0)
            path = Path(tmp) / f"cmpnet_q{q}.onnx"
            export_lbc_onnx(build_cmpnet(anchors_per_channel=q), path, INPUT_SHAPE)
            out[f"q={q}"] = {k: round(v, 2) for k, v in ratios(cost_of(str(path), hw)).items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cmpnet")
    parser.add_argument("--anchors-sweep", default=None, help="comma-separated q values (cost only)")
    parser.add_argument("--cnn", default=None)
    parser.add_argument("--hw", default=None)
    args = parser.parse_args()
    if args.anchors_sweep:
        print(json.dumps(anchors_sweep([int(q) for q in args.anchors_sweep.split(",")], args.hw), indent=2))
        return
    if not args.cmpnet:
        parser.error("--cmpnet or --anchors-sweep is required")
    cost = cost_of(args.cmpnet, args.hw)
    extra = cost["cmp_pim"]
    result = {
        "ratios": {k: round(v, 2) for k, v in ratios(cost).items()},
        "published": PUBLISHED,
        "within_25pct": {k: abs(ratios(cost)[k] / v - 1) <= 0.25 for k, v in PUBLISHED.items()},
        "energy_j": {"cmpnet": cost["energy_j"], **{k: v["energy_j"] for k, v in cost["baselines"].items()}},
        "latency_s": {"cmpnet": cost["latency_s"], **{k: v["latency_s"] for k, v in cost["baselines"].items()}},
        "breakdown_j": {"cmpnet": cost["energy_breakdown_j"], **baseline_breakdowns(cost)},
        **{key: {"cmpnet": extra[key], **value} for key, value in network_extras(args.cmpnet, args.hw).items()},
        "per_op_cycles": {"cnn_mac_8x8_K144": mac_cycles(8, 8, 144), "pointwise_mac_8x1_K128": mac_cycles(8, 1, 128),
                          "anchor_tadd_8b_K9": ternary_add_cycles(8, 9),
                          "lbcnn_pointwise_mac_8x8_K128": mac_cycles(8, 8, 128)},
        "derivation": derivation(cost),
        "sensitivity": sweep(args.cmpnet),
    }
    if args.cnn:
        plain = cost_of(args.cnn, args.hw)
        result["plain_twin_check"] = {
            "plain_cnn_energy_j": plain["energy_j"], "derived_cnn_baseline_energy_j": cost["baselines"]["cnn"]["energy_j"],
            "plain_cnn_latency_s": plain["latency_s"],
            "derived_cnn_baseline_latency_s": cost["baselines"]["cnn"]["latency_s"],
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
