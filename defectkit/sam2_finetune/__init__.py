"""Fine-tuning SAM2 on labelled defect masks, and measuring what it gains.

Training follows SAM2's own recipe for prompted segmentation: for every ground-truth region, sample
a prompt from it (a jittered box, or positive points with optional negative points around it); run
the image encoder (frozen by default: its features are computed once per image and kept), the
prompt encoder and the mask decoder; optimise focal + dice loss on the masks (20:1), an L1 loss on
the predicted IoU and the object-score loss, with AdamW, bf16 autocast on CUDA, gradient
accumulation and a cosine learning-rate decay. The result is saved in the stock checkpoint layout
(``{"model": state_dict}``), so ``sam2.build_sam.build_sam2(config, ckpt_path=...)`` and every tool
that reads SAM2 checkpoints loads it unchanged.

Modules, one concept each:

- ``model``: config names, loading a checkpoint (clear errors), saving one, the differentiable
  encode / decode calls that mirror ``SAM2ImagePredictor``.
- ``data``: labelled images and their regions, the held-out split by image, prompt sampling.
- ``losses``: focal, dice, IoU and object-score losses as SAM2 trains with them.
- ``train``: the training loop, checkpoints, resume state, TensorBoard.
- ``evaluate``: box- and point-prompted IoU per subtype and automatic-mask-generator recall.
- ``study``: fine-tuning on 10/25/50/100 % of the training images, a table and a plot.
"""

from defectkit.sam2_finetune.data import DataOptions, LabelledImage, Split, load_split
from defectkit.sam2_finetune.evaluate import AMG_DEFAULTS, Evaluation, evaluate
from defectkit.sam2_finetune.model import load_model, read_metadata, resolve_config, save_checkpoint
from defectkit.sam2_finetune.train import FinetuneOptions, FinetuneResult, finetune, finetune_sam2

__all__ = [
    "AMG_DEFAULTS",
    "DataOptions",
    "Evaluation",
    "FinetuneOptions",
    "FinetuneResult",
    "LabelledImage",
    "Split",
    "evaluate",
    "finetune",
    "finetune_sam2",
    "load_model",
    "load_split",
    "read_metadata",
    "resolve_config",
    "save_checkpoint",
]
