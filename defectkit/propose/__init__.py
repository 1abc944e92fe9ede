"""Mask proposers, chosen by name: ``create_proposer("classical")``.

Built-ins: ``learned`` (a segmentation network trained on the user's labels), ``classical``
(OpenCV), ``sam2`` (automatic, prompted or tiled SAM2), ``hybrid`` (another proposer's regions
refined by SAM2 box and point prompts), ``given`` (annotation masks and boxes), ``union`` (every
region of several proposers) and ``auto`` (the
best of these that is available: see ``defectkit.propose.auto``). Other packages
add theirs through the ``defectkit.proposers`` entry-point group (see ``defectkit.registry``).
"""

from __future__ import annotations

from defectkit.errors import DefectkitError
from defectkit.propose.base import Prompts, Proposer
from defectkit.registry import Registry

PROPOSERS = Registry("proposer", "defectkit.proposers")
PROPOSERS.register("classical", "defectkit.propose.classical:ClassicalProposer")
PROPOSERS.register("sam2", "defectkit.propose.sam2:SAM2Proposer")
PROPOSERS.register("hybrid", "defectkit.propose.hybrid:HybridProposer")
PROPOSERS.register("given", "defectkit.propose.given:GivenProposer")
PROPOSERS.register("learned", "defectkit.propose.learned:LearnedProposer")
PROPOSERS.register("union", "defectkit.propose.union:UnionProposer")
PROPOSERS.register("auto", "defectkit.propose.auto:auto_proposer")


def create_proposer(name: str, **options) -> Proposer:
    """Build the proposer registered as ``name`` with ``options`` (its constructor's arguments)."""
    return PROPOSERS.create(name, **options)


def proposer_names() -> list[str]:
    return PROPOSERS.names()


__all__ = ["PROPOSERS", "Prompts", "Proposer", "build_proposer", "create_proposer", "parse_options", "proposer_names"]


def build_proposer(
    name: str = "auto",
    sam2_checkpoint: str | None = None,
    sam2_config: str | None = None,
    annotations: str | None = None,
    annotation_format: str = "masks",
    options: dict | None = None,
    proposer_model: str | None = None,
    device: str | None = None,
) -> Proposer:
    """A proposer from the command line's flags: each flag goes to the proposers that use it
    (``--sam2-*`` to sam2, hybrid and auto; ``--annotations`` to given; ``--proposer-model`` to
    learned, to auto, to hybrid as its source and to union's learned member; ``--device`` to every
    network); ``options`` go as given."""
    kwargs = dict(options or {})
    if proposer_model:
        learned = {
            "learned": {"model": proposer_model},
            "auto": {"learned": proposer_model},
            "hybrid": {"source": "learned", "source_options": {"model": proposer_model}},
            "union": {"member_options": {"learned": {"model": proposer_model}}},
        }
        if name not in learned:
            raise DefectkitError(f"--proposer-model is for the {', '.join(learned)} proposers, not {name!r}")
        kwargs.update(learned[name])
    elif name == "learned":
        raise DefectkitError("the learned proposer needs a proposer bundle: --proposer-model DIR (from `defectkit train-proposer`), "
                             "or a --model that carries one")
    if name in ("sam2", "hybrid", "auto"):
        if sam2_checkpoint:
            kwargs["checkpoint"] = sam2_checkpoint
        if sam2_config:
            kwargs["config" if name == "sam2" else "sam2_config"] = sam2_config
    elif name == "given":
        if annotations:
            kwargs.update(source=annotations, format=annotation_format)
    if device:
        if name in ("learned", "sam2", "hybrid", "auto"):
            kwargs["device"] = device
        if name == "hybrid" and kwargs.get("source") == "learned":
            kwargs["source_options"] = {**kwargs["source_options"], "device": device}
        if name == "union" and "member_options" in kwargs:
            kwargs["member_options"] = {"learned": {**kwargs["member_options"]["learned"], "device": device}}
    return create_proposer(name, **kwargs)


def parse_options(pairs: list[str]) -> dict:
    """``["points_per_side=48", "mode=tiled"]`` -> ``{"points_per_side": 48, "mode": "tiled"}`` (values read as YAML)."""
    import yaml

    from defectkit.yaml_files import load_yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise DefectkitError(f"proposer option {pair!r} is not KEY=VALUE")
        try:
            out[key.strip()] = load_yaml(value)
        except yaml.YAMLError as exc:
            raise DefectkitError(f"proposer option {pair!r}: its value is not valid YAML ({exc})") from exc
    return out
