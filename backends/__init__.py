"""Targets. One module per target (lower -> schedule -> cost); each registers with ``@register_target``.

Backends read ``pimc.compiler.workload`` records and never import ``pimc.passes``.
"""
