"""Graph passes, one algorithm per folder; each folder holds its ONNX rewrite(s) and its torch exporter.

``PASS_MODULES`` declares every pass: its name and the module that defines it. ``METHODS`` declares every
training-aware method (``pimc export <method>`` and ``pimc.compress(method=...)``) and the module whose
``METHOD`` describes it (``compiler/method.py``); its click command is ``pimc.cli.export.<name>``. ``pimc compile`` imports
only the modules of the passes its pipeline runs, and no pass module imports torch (a test checks both).
"""

PASS_MODULES: dict[str, str] = {
    "fold-constants": "pimc.passes.basic.fold_constants",
    "eliminate-identity": "pimc.passes.basic.eliminate_identity",
    "fold-batchnorm": "pimc.passes.basic.fold_batchnorm",
    "fuse-relu": "pimc.passes.basic.fuse_relu",
    "cleanup": "pimc.passes.basic.cleanup",
    "shrink": "pimc.passes.shrink.shrink",
    "decompose": "pimc.passes.decompose.decompose",
    "recompose": "pimc.passes.decompose.recompose",
    "pattern-prune": "pimc.passes.pattern.pattern_prune",
    "prune": "pimc.passes.prune.prune",
    "channel-prune": "pimc.passes.channel.channel_prune",
    "quantize": "pimc.passes.quantize.quantize",
    "bitmap": "pimc.passes.quantize.bitmap",
    "comparator-conv": "pimc.passes.comparator.comparator_conv",
    "cim-emulate": "pimc.passes.cim.cim_emulate",
    "activation-sparsity": "pimc.passes.feature_reg.activation_sparsity",
}

METHODS: dict[str, str] = {
    "decompose": "pimc.passes.decompose.config",
    "pattern": "pimc.passes.pattern.config",
    "prune": "pimc.passes.prune.config",
    "quantize": "pimc.passes.quantize.config",
    "comparator": "pimc.passes.comparator.config",
    "feature-reg": "pimc.passes.feature_reg.config",
    "channel-prune": "pimc.passes.channel.config",
    "admp": "pimc.passes.channel.admp_config",
}
