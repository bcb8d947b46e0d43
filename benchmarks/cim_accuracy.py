"""Accuracy on digits under the CiM macro: fp32, int8 (signed, the CiM pipeline) and the macro's A/D +
analog-noise model (cim-emulate) at several σ and ADC resolutions, all measured on onnxruntime.

Equivalent CLI (M = the bundled model, python -c "import pimc.models as m; print(m.bundled_model_path())"):

    pimc run M --data digits                                                   # fp32
    pimc compile M --target cim --data digits -o int8.onnx && pimc run int8.onnx --data digits
    pimc compile M --target cim --data digits -o emu.onnx \\
        --passes fold-constants,eliminate-identity,fold-batchnorm,fuse-relu,quantize,cim-emulate,cleanup \\
        --set quantize.act_scheme=symmetric --set cim-emulate.sigma=0.01 && pimc run emu.onnx --data digits

Run: python benchmarks/cim_accuracy.py [--sigmas 0,0.002,0.01,0.03,0.1] [--seeds 0,1,2] [--model PATH]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from pimc.app.compile import CompileOptions, compile_model
from pimc.models import bundled_model_path
from pimc.runtime.datasets import load_dataset
from pimc.runtime.session import evaluate, model_input

PIPELINE = "fold-constants,eliminate-identity,fold-batchnorm,fuse-relu,quantize,cim-emulate,cleanup"


def accuracy(path: Path, data) -> float:
    return evaluate(str(path), data, repeats=1)["accuracy"]


def compile_to(src: str, out: Path, passes: str | None, sets: tuple[str, ...], seed: int = 0) -> None:
    compile_model(CompileOptions(input=src, target="cim", output=str(out), data="digits", passes=passes,
                                 sets=sets, seed=seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(bundled_model_path()))
    parser.add_argument("--sigmas", default="0,0.002,0.01,0.03,0.1")
    parser.add_argument("--adc-bits", default="8,6,5")
    parser.add_argument("--seeds", default="0,1,2", help="noise seeds (temporal noise)")
    args = parser.parse_args()
    _, shape, _ = model_input(args.model)
    data = load_dataset("digits", shape)
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        print(f"fp32                       {accuracy(Path(args.model), data):.4f}")
        compile_to(args.model, tmpdir / "int8.onnx", None, ())
        print(f"int8 (cim default pipeline) {accuracy(tmpdir / 'int8.onnx', data):.4f}")
        for bits in [int(b) for b in args.adc_bits.split(",")]:
            for sigma in [float(s) for s in args.sigmas.split(",")]:
                results = []
                for seed in seeds if sigma > 0 else seeds[:1]:
                    out = tmpdir / "emu.onnx"
                    sets = ("quantize.act_scheme=symmetric", f"cim-emulate.sigma={sigma}",
                            f"cim-emulate.adc_bits={bits}", f"cim-emulate.seed={seed}")
                    compile_to(args.model, out, PIPELINE, sets)
                    results.append(accuracy(out, data))
                spread = f" ± {statistics.pstdev(results):.4f} over {len(results)} seeds" if len(results) > 1 else ""
                print(f"cim-emulate adc_bits={bits} sigma={sigma:<6g} {statistics.mean(results):.4f}{spread}",
                      flush=True)


if __name__ == "__main__":
    main()
