"""engine: computation shared by every method and metric.

Layer addressing and hooks, the capture pass (one streaming pass per model, layer and
dataset; shardable over torch.distributed processes) and its statistics, ARV relevance and the tau/p/gamma rule, per-neuron
attributions (PURE), receptive-field crops, feature-visualisation backends, the memos a run
owns, activation traces, and the Environment that builds one Context per layer.

May import: core, storage, sources.
"""
