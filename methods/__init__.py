"""Disentanglement methods: one file per method, registered in ``benchmark.core.registry.METHODS``
when imported (``benchmark.core.registry.load_plugins`` imports every module here)."""
