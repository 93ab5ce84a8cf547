"""planting: polysemantic channels made on purpose, with ground truth.

Merging two channels into one (merge), fine-tuning the network to use the merged channel
(functional) and the validity filter that accepts a planted channel only when the network
uses it for both of its concepts (validity).

May import: core, storage, sources, engine.
"""
