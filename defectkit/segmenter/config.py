"""The settings of a segmentation network and of its training (no torch needed to read them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from defectkit.errors import DefectkitError
from defectkit.jsonable import to_jsonable
from defectkit.pretrained import IMAGENET, IMAGENET_MEAN, IMAGENET_STD, normalisation, weights_file

ARCHITECTURES = {"unet": "Unet", "fpn": "FPN", "deeplabv3plus": "DeepLabV3Plus"}
# unet: one width per decoder stage; fpn: (pyramid, segmentation) widths; deeplabv3plus: (width,)
# (sized for a CPU: smp's U-Net default, 256..16, costs three times the FPN per step)
DECODER_CHANNELS = {"fpn": (64, 32), "unet": (64, 32, 16, 16, 8), "deeplabv3plus": (128,)}


@dataclass(frozen=True)
class NetworkSpec:
    architecture: str = "unet"
    encoder: str = "tf_efficientnet_lite0"  # any timm model name
    decoder_channels: tuple[int, ...] = ()  # () : the architecture's default in DECODER_CHANNELS
    classes: int = 1  # one map: defect vs background (the classifier names the subtype)
    # the input's mean and std (0-1 scale); () : those of the encoder's packaged ImageNet weights
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise DefectkitError(f"unknown architecture {self.architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
        if not self.decoder_channels:
            object.__setattr__(self, "decoder_channels", DECODER_CHANNELS[self.architecture])
        mean, std = normalisation(self.encoder)
        object.__setattr__(self, "mean", tuple(float(v) for v in (self.mean or mean)))
        object.__setattr__(self, "std", tuple(float(v) for v in (self.std or std)))

    def to_dict(self) -> dict:
        return {**asdict(self), "decoder_channels": list(self.decoder_channels), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> "NetworkSpec":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("decoder_channels", "mean", "std"):
            if key in known:
                known[key] = tuple(known[key])
        # bundles written before the spec carried its normalisation were all fed ImageNet's
        known.setdefault("mean", IMAGENET_MEAN)
        known.setdefault("std", IMAGENET_STD)
        return cls(**known)


LOSSES = ("dice+bce", "dice+focal", "tversky")
RANDOM = "random"


@dataclass(frozen=True)
class TrainProposerConfig:
    network: NetworkSpec = NetworkSpec()
    image_size: int = 160  # side of the training crops (in the network's pixels, after input_scale)
    input_scale: float = 1.0  # the network sees every image resized by this factor (0.5: half the side)
    batch_size: int = 16
    epochs: int = 80  # the most epochs; --max-minutes may end training sooner
    steps_per_epoch: int = 64
    # time budget of the whole training (checks and the final choice included; 0: none): on a 2-core
    # CPU it ends the run before --epochs (about 70 of the 80 fit), on a GPU the epochs end it first
    max_minutes: float = 40.0
    defect_share: float = 0.6  # crops centred on a true defect; the rest anywhere
    lr: float = 2e-3
    weight_decay: float = 1e-4
    loss: str = "dice+bce"
    box_fill: str = "ellipse"  # boxes as weak masks: the inscribed ellipse, or the filled box
    val_fraction: float = 0.2
    eval_every: int = 4  # epochs between validations
    patience: int = 6  # validations without a better region F1 before stopping
    tile: int = 512  # inference: images larger than this are tiled
    overlap: int = 64
    min_area: int = 10
    max_false_per_clean: float = 0.4  # post-processing: most recall with at most this many false regions per clean image
    # the encoder's start: "imagenet" (packaged weights, defectkit.pretrained), a defectkit backbone
    # file, "hub" (timm, online) or "random"
    encoder_weights: str = IMAGENET
    seed: int = 0

    def validate(self) -> None:
        for name in ("image_size", "batch_size", "epochs", "steps_per_epoch", "eval_every", "patience"):
            if getattr(self, name) < 1:
                raise DefectkitError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.image_size % 32:
            raise DefectkitError(f"--image-size must be a multiple of 32, got {self.image_size}")
        if self.tile % 32 or self.tile <= 2 * self.overlap:
            raise DefectkitError(f"tile {self.tile} must be a multiple of 32 and more than twice the overlap {self.overlap}")
        if not 0.1 <= self.input_scale <= 2:
            raise DefectkitError(f"--input-scale must be between 0.1 and 2, got {self.input_scale}")
        if self.loss not in LOSSES:
            raise DefectkitError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.max_false_per_clean < 0:
            raise DefectkitError(f"--max-false-per-clean must be 0 or more, got {self.max_false_per_clean}")
        if not 0 < self.val_fraction < 1:
            raise DefectkitError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        if self.max_minutes < 0:
            raise DefectkitError(f"--max-minutes must be 0 (no budget) or more, got {self.max_minutes}")
        if self.encoder_weights == IMAGENET:
            weights_file(self.network.encoder)  # refused here, before any data is read, when absent or changed

    def to_dict(self) -> dict:
        return to_jsonable({**asdict(self), "network": self.network.to_dict()})
