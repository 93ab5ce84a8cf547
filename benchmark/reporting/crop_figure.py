"""Figure: each method's virtual neurons shown by their top reference images, cropped.

For the first ``num_targets`` targets of the pairs track (else the layer track), one row
per (method, virtual neuron): the neuron's first ``per_neuron`` reference images (the
split's ``reference_ids``, into the fit data) cropped to the channel's receptive field
exactly as the embedding-separation metric crops them (:func:`benchmark.engine.crops.
pure_crops`, PURE's protocol), so a person can see what each virtual neuron
responds to. Written as ``figures/reference_crops_<target>.png/.pdf``. Methods without
reference samples (or not applicable to the target) are left out.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmark.core.types import NotApplicable
from benchmark.engine.crops import pure_crops


def neuron_crops(split, context, per_neuron: int = 4, crop_size: int = 96) -> list[torch.Tensor]:
    """Per virtual neuron, (n, 3, crop_size, crop_size) RGB crops in [0, 1] of its first references.

    Each reference is cropped exactly as the embedding-separation metric crops its shared
    pool (:func:`benchmark.engine.crops.pure_crops`: LRP of the original channel seeded at its
    maximally activating position, PURE's protocol), then resized for display only.
    """
    out = []
    for ids in split.reference_ids:
        ids = [int(j) for j in list(ids)[:per_neuron]]
        if not ids:
            out.append(torch.empty(0, 3, crop_size, crop_size))
            continue
        images = context.fit.images(ids).to(context.device)
        with torch.enable_grad():
            crops = pure_crops(context.model, split.target.layer, split.target.channel, images)
        shown = [F.interpolate(c.unsqueeze(0).float(), size=(crop_size, crop_size), mode="bilinear",
                               align_corners=False) for c in crops]
        out.append(context.fit.to_unit_range(torch.cat(shown)).cpu())
    return out


def _draw(rows: list[tuple[str, torch.Tensor]], per_neuron: int, path: Path, title: str) -> list[Path]:
    from benchmark.reporting import plots

    fig, axes = plots._figure(per_neuron, len(rows), size=(1.6, 1.6))
    for r, (label, crops) in enumerate(rows):
        for c in range(per_neuron):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < crops.shape[0]:
                ax.imshow(crops[c].permute(1, 2, 0).numpy())
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=9)
    return list(plots._save(fig, path))


def reference_crop_figures(fig_dir: Path, plans_by_track: dict, methods, num_targets: int = 2,
                           per_neuron: int = 4) -> list[Path]:
    """Draw the figure for the first targets of the pairs (else layer) track."""
    plan = plans_by_track.get("pairs")
    if plan is None or not plan.targets:
        plan = plans_by_track.get("layer")
    if plan is None or not plan.targets:
        return []
    names = [c.name for c in plan.context.fit.classes]
    written = []
    for target in plan.targets[:num_targets]:
        rows = []
        for m in methods:
            try:
                split = m.instance.fit(plan.context_of(target), target)
            except NotApplicable:
                continue
            if not split.reference_ids:
                continue
            for i, crops in enumerate(neuron_crops(split, plan.context_of(target), per_neuron)):
                concept = ""
                if split.concepts and i < len(split.concepts):
                    concept = " (" + "+".join(names[c] for c in split.concepts[i]) + ")"
                rows.append((f"{m.name} v{i}{concept}", crops))
        if rows:
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", target.key)
            written += _draw(rows, per_neuron, fig_dir / f"reference_crops_{slug}",
                             f"{target.key}: top reference crops per virtual neuron ({plan.track} track)")
    return written
