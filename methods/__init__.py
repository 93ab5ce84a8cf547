"""Disentanglement methods: one file per method, registered in ``benchmark.registry.METHODS``
when imported (``benchmark.registry.load_plugins`` imports every module here)."""
