"""Targets. One module (or package) per target (lower -> schedule -> cost); each declares its class as
``class X(Target, name="x")``, and ``TARGET_MODULES`` declares which module defines which target, so a compile
imports only its own target.

Backends read ``pimc.compiler.workload`` records and never import ``pimc.passes``.
"""

TARGET_MODULES: dict[str, str] = {
    "cim": "pimc.backends.cim",
    "cmp-pim": "pimc.backends.cmp_pim",
    "escalate": "pimc.backends.escalate",
    "onnxruntime": "pimc.backends.onnxruntime",
}
