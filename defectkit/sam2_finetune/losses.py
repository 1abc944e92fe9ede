"""The losses SAM2 is trained with (``training/loss_fns.py`` of the SAM2 repository, which the PyPI
package ships but cannot import without its training dependencies): sigmoid focal loss and dice
loss on the mask logits, weighted 20:1; an L1 loss between the predicted and the actual IoU of every
output mask; a BCE on the object score (every region here is a present object).

Where a prompt gets three masks (one click), focal and dice count only for the mask that fits best,
as in SAM: the prompt was ambiguous and any of the three may be the intended object.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss


@dataclass(frozen=True)
class LossWeights:
    mask: float = 20.0  # focal
    dice: float = 1.0
    iou: float = 1.0
    object: float = 1.0


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """(N, M, H, W) logits and targets -> (N, M), averaged over pixels (torchvision's RetinaNet focal loss)."""
    return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="none").flatten(2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, M, H, W) -> (N, M): 1 - soft Dice coefficient, smoothed by 1."""
    prob = logits.sigmoid().flatten(2)
    targets = targets.flatten(2)
    return 1 - (2 * (prob * targets).sum(-1) + 1) / (prob.sum(-1) + targets.sum(-1) + 1)


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, M) IoU of the thresholded masks (logit > 0) with the targets; no gradient."""
    pred = logits.detach().flatten(2) > 0
    gt = targets.flatten(2) > 0.5
    return (pred & gt).sum(-1).float() / (pred | gt).sum(-1).float().clamp(min=1.0)


def sam2_loss(logits: torch.Tensor, targets: torch.Tensor, iou_pred: torch.Tensor, object_score: torch.Tensor,
              weights: LossWeights = LossWeights()) -> dict[str, torch.Tensor]:
    """Summed (not averaged) losses of N prompts: the caller divides by the number of objects.

    ``logits`` (N, M, H, W) at the targets' resolution, ``targets`` (N, 1, H, W) in {0, 1},
    ``iou_pred`` (N, M), ``object_score`` (N, 1). Returns the weighted ``total`` and its parts.
    """
    logits = logits.float()
    targets = targets.float().expand_as(logits)
    focal = focal_loss(logits, targets)
    dice = dice_loss(logits, targets)
    best = torch.argmin(weights.mask * focal + weights.dice * dice, dim=1)
    rows = torch.arange(len(best), device=logits.device)
    iou = F.l1_loss(iou_pred.float(), mask_iou(logits, targets), reduction="none").mean(1)
    obj = F.binary_cross_entropy_with_logits(object_score.float(), torch.ones_like(object_score, dtype=torch.float), reduction="none").sum(1)
    parts = {
        "focal": focal[rows, best].sum(),
        "dice": dice[rows, best].sum(),
        "iou": iou.sum(),
        "object": obj.sum(),
    }
    parts["total"] = (weights.mask * parts["focal"] + weights.dice * parts["dice"]
                      + weights.iou * parts["iou"] + weights.object * parts["object"])
    return parts
