"""The `defectkit` command line: a thin layer that parses arguments and calls the library."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.table import Table

from defectkit.errors import DefectkitError
from defectkit.jobs.extract import ExtractOptions
from defectkit.jobs.segment import SegmentOptions
from defectkit.segmenter.config import TrainProposerConfig

# Defaults come from the options each job takes: stated once, there.
_EXTRACT, _SEGMENT = ExtractOptions(), SegmentOptions()
_DEVICE = typer.Option(None, help="cpu, cuda or cuda:N; default cuda when present.")
_OVERLAYS = typer.Option("all", help="Overlay pictures for: all images (clean ones get an OK stamp), defects (only images with one), none.")
_OVERLAY_FORMAT = typer.Option("png", help="png, or jpg (about a fifth of the size).")

_ENGINE = typer.Option("local", help="local, or ray: an actor pool on a Ray cluster (pip install 'defectkit\\[ray]').")
_ADDRESS = typer.Option(None, help="--engine ray: the cluster to join (auto, or ray://host:10001); default a local Ray.")
_WORKERS = typer.Option(1, help="--engine ray: actors, each with the model loaded once.")
_CPUS_PER_WORKER = typer.Option(1, help="--engine ray: CPUs per actor (its torch threads).")
_GPUS_PER_WORKER = typer.Option(0, help="--engine ray: GPUs per actor (fractions share one).")


def _check_proposer(name: str) -> None:
    """Before any model loads: an unknown proposer name is a one-line error."""
    from defectkit.propose import proposer_names

    if name not in proposer_names():
        raise DefectkitError(f"unknown proposer {name!r}; choose one of: {', '.join(proposer_names())}")


def _check_engine(engine: str) -> None:
    if engine not in ("local", "ray"):
        raise DefectkitError(f"--engine must be local or ray, got {engine!r}")


def _start_ray(address, workers, cpus_per_worker, gpus_per_worker, doing: str) -> None:
    from defectkit.distributed import start

    start(address)
    console.print(f"engine: ray, {workers} worker(s) of {cpus_per_worker} CPU and {gpus_per_worker} GPU; {doing}",
                  soft_wrap=True, markup=False)


def _embed_on(engine, address, workers, cpus_per_worker, gpus_per_worker):
    """train and evaluate: None (embed here), or the Ray actor pool that embeds the crops."""
    _check_engine(engine)
    if engine != "ray":
        return None
    import functools

    from defectkit.distributed import RayEmbedder

    _start_ray(address, workers, cpus_per_worker, gpus_per_worker, "embedding the crops there, fitting here")
    return functools.partial(RayEmbedder, workers=workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker)


app = typer.Typer(add_completion=False, no_args_is_help=True, help="Find and name surface defects on industrial images.")
console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from defectkit import __version__

        typer.echo(f"defectkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit.")) -> None:
    """defectkit: propose, polygonize, embed and classify surface defects."""
    warnings.showwarning = _show_warning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    console.print(f"[yellow]warning:[/yellow] {rich_escape(str(message))}", soft_wrap=True)


_PROPOSER = typer.Option("auto", "--proposer", "-p", help="auto | learned | hybrid | sam2 | classical | given, or a plugin's name.")
_SAM2_CHECKPOINT = typer.Option(None, help="SAM2 checkpoint (default: the config's file in checkpoints/).")
_SAM2_CONFIG = typer.Option(None, help="SAM2 config: sam2.1_hiera_t|s|b+|l or a YAML in configs/sam2/.")


def proposer_choice(proposer) -> str:
    """What will propose the regions, and for auto why."""
    described = proposer.describe()
    if described.get("name") != "auto":
        return str(described.get("name"))
    return f"auto chose {described['chose'].get('name')}: {described['because']}"


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {rich_escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def extract(
    src: Path = typer.Argument(..., help="Labelled data set: a folder (or a COCO json file)."),
    out: Path = typer.Argument(..., help="Output folder for manifest.jsonl and crops/."),
    format: str = typer.Option(_EXTRACT.format, "--format", "-f", help="masks | voc | coco | yolo | labelstudio | crops"),
    taxonomy: Path = typer.Option(..., "--taxonomy", "-t", help="Taxonomy YAML (categories, subtypes, aliases)."),
    mask_threshold: int = typer.Option(_EXTRACT.mask_threshold, help="A mask pixel is set where its value is above this."),
    min_area: int = typer.Option(_EXTRACT.min_area, help="Drop regions smaller than this many pixels."),
    polygon_tolerance: float = typer.Option(_EXTRACT.polygon_tolerance, help="Polygon simplification tolerance in pixels."),
    crop_size: int = typer.Option(_EXTRACT.crop.size, help="Side of the square crops in pixels."),
    padding: float = typer.Option(_EXTRACT.crop.padding, help="Context around a region, as a share of its longer side."),
    background_per_image: int = typer.Option(_EXTRACT.background_per_image, help="Background regions sampled per defect-free image."),
    background_in_defect_images: int = typer.Option(_EXTRACT.background_in_defect_images, help="Background regions sampled per defect image, away from its defects."),
    negatives_from: str = typer.Option("auto", help="Add this proposer's proposals that touch no defect as background crops (hard negatives), so that the classifier learns to reject what the proposer finds on clean surface: auto (what classify uses by default), learned, classical, ..., or none."),
    proposer_model: Optional[str] = typer.Option(None, help="The proposer bundle of --negatives-from learned (from train-proposer)."),
    proposal_positives: bool = typer.Option(_EXTRACT.proposal_positives, help="Also add that proposer's proposals that match a labelled defect (IoU >= 0.3) as crops of its subtype, so that the classifier learns defects as the proposer outlines them."),
    seed: int = typer.Option(_EXTRACT.seed, help="Seed for background sampling (same seed, same output)."),
    device: Optional[str] = _DEVICE,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Turn a labelled data set into a crop data set (manifest.jsonl + crop and mask PNGs)."""
    from defectkit.crops import CropSpec
    from defectkit.jobs.extract import ExtractOptions, extract as run_extract
    from defectkit.taxonomy import Taxonomy

    try:
        options = ExtractOptions(
            format=format,
            mask_threshold=mask_threshold,
            min_area=min_area,
            polygon_tolerance=polygon_tolerance,
            crop=CropSpec(size=crop_size, padding=padding),
            background_per_image=background_per_image,
            background_in_defect_images=background_in_defect_images,
            negatives_from=None if negatives_from == "none" else negatives_from,
            proposer_model=proposer_model,
            proposal_positives=proposal_positives,
            seed=seed,
            device=device and _device(device),
        )
        summary = run_extract(src, out, Taxonomy.load(taxonomy), options, progress=not quiet)
    except (DefectkitError, ValueError) as exc:
        _fail(exc)
    print_extract_summary(summary)
    if summary.skipped:
        raise typer.Exit(1)


def print_extract_summary(summary) -> None:
    out = Console()
    table = Table(title=f"crops written to {summary.out}")
    table.add_column("category")
    table.add_column("subtype")
    table.add_column("crops", justify="right")
    for (category, subtype), count in sorted(summary.crops.items()):
        table.add_row(category, subtype, str(count))
    table.add_row("[bold]total", "", f"[bold]{sum(summary.crops.values())}")
    out.print(table)
    out.print(f"{summary.images} images read, manifest: {summary.manifest}", soft_wrap=True)
    if summary.empty:
        out.print(f"[yellow]{len(summary.empty)} defect image(s) with an empty mask (no crop):[/yellow]")
        for path in summary.empty:
            out.print(f"  {path}", soft_wrap=True)
    if summary.skipped:
        out.print(f"[red]{len(summary.skipped)} file(s) skipped:[/red]")
        for path, reason in summary.skipped:
            out.print(f"  {path}: {reason}", soft_wrap=True, markup=False)


@app.command()
def split(
    dataset: Path = typer.Argument(..., help="Crop data set (folder with manifest.jsonl)."),
    out: Path = typer.Argument(..., help="Writes OUT/train/manifest.jsonl and OUT/test/manifest.jsonl."),
    test_size: float = typer.Option(0.3, help="Share of each subtype's images that goes to test."),
    seed: int = typer.Option(0, help="Seed of the split."),
):
    """Split a crop data set into train and test, grouped by source image, stratified by subtype."""
    from collections import Counter

    from defectkit.data.split import split_dataset

    try:
        parts = split_dataset(dataset, out, test_size, seed)
    except DefectkitError as exc:
        _fail(exc)
    for name, records in parts.items():
        counts = Counter(r["subtype"] for r in records)
        images = len({r["image"] for r in records})
        typer.echo(f"{name}: {len(records)} crops from {images} images  " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


@app.command()
def segment(
    inputs: list[Path] = typer.Argument(..., help="Image files, folders (recursed) or .txt lists of paths."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    proposer: str = _PROPOSER,
    proposer_model: Optional[str] = typer.Option(None, help="Proposer bundle (from train-proposer) for learned, auto or hybrid."),
    sam2_checkpoint: Optional[str] = _SAM2_CHECKPOINT,
    sam2_config: Optional[str] = _SAM2_CONFIG,
    annotations: Optional[str] = typer.Option(None, help="given: annotation data set (default: the mask beside each image)."),
    annotation_format: str = typer.Option("masks", help="given: masks | voc | coco"),
    option: list[str] = typer.Option([], "--option", "-O", help="Proposer setting KEY=VALUE (repeatable), e.g. points_per_side=48."),
    min_area: int = typer.Option(_SEGMENT.min_area, help="Drop regions smaller than this many pixels."),
    polygon_tolerance: float = typer.Option(_SEGMENT.polygon_tolerance, help="Polygon simplification tolerance in pixels."),
    overlays: str = _OVERLAYS,
    overlay_format: str = _OVERLAY_FORMAT,
    resume: bool = typer.Option(_SEGMENT.resume, help="Keep images whose results already exist in --out."),
    device: Optional[str] = _DEVICE,
    engine: str = _ENGINE,
    address: Optional[str] = _ADDRESS,
    workers: int = _WORKERS,
    cpus_per_worker: float = _CPUS_PER_WORKER,
    gpus_per_worker: float = _GPUS_PER_WORKER,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Propose defect masks and write their polygons: per-image JSON and overlay, coco.json, defects.csv."""
    from defectkit.jobs.batch import expand_inputs
    from defectkit.jobs.segment import SegmentOptions, segment as run_segment, segment_on_ray
    from defectkit.propose import build_proposer, parse_options

    try:
        options = SegmentOptions(min_area=min_area, polygon_tolerance=polygon_tolerance, overlays=overlays,
                                 overlay_format=overlay_format, resume=resume)
        proposer_options = parse_options(option)
        device = device and _device(device)
        if engine == "ray":
            expand_inputs(inputs)
            _check_proposer(proposer)
            if sam2_checkpoint or sam2_config or annotations:
                raise DefectkitError("--engine ray takes a proposer by name (with --proposer-model, -O); not --sam2-* or --annotations")
            _start_ray(address, workers, cpus_per_worker, gpus_per_worker, f"proposer {proposer}")
            report = segment_on_ray(inputs, out, options, progress=not quiet, proposer=proposer, proposer_options=proposer_options,
                                    proposer_model=proposer_model, workers=workers, cpus_per_worker=cpus_per_worker,
                                    gpus_per_worker=gpus_per_worker, device=device)
            chosen_name = proposer
        else:
            _check_engine(engine)
            chosen = build_proposer(proposer, sam2_checkpoint, sam2_config, annotations, annotation_format, proposer_options,
                                    proposer_model, device=device)
            console.print(f"proposer: {proposer_choice(chosen)}", soft_wrap=True, markup=False)
            report = run_segment(inputs, out, chosen, options, progress=not quiet)
            chosen_name = chosen.describe().get("name")
    except (DefectkitError, ValueError) as exc:
        _fail(exc)
    console.print(f"proposer: {chosen_name}; {report.done} image(s) segmented, {report.skipped} kept from before, "
                  f"{len(report.failed)} failed, in {report.seconds:.1f} s; results in {out}", soft_wrap=True, markup=False)
    if report.failed:
        console.print(f"failed images are listed in {report.errors_path}", markup=False)
        raise typer.Exit(1)


@app.command("finetune-sam2")
def finetune_sam2(
    dataset: Path = typer.Argument(..., help="Mask data set (as `extract --format masks` reads it) or a COCO json file."),
    sam2_config: str = typer.Option("sam2.1_hiera_t", help="SAM2 model config: sam2.1_hiera_t|s|b+|l (or sam2_hiera_*)."),
    sam2_checkpoint: Path = typer.Option(..., help="Checkpoint to start from, e.g. checkpoints/sam2.1_hiera_tiny.pt."),
    out: Path = typer.Option(..., help="Where to write the fine-tuned checkpoint, e.g. checkpoints/<name>.pt."),
    format: str = typer.Option("masks", "--format", "-f", help="masks | coco"),
    taxonomy: Optional[Path] = typer.Option(None, "--taxonomy", "-t", help="Taxonomy YAML; without it every region is used, whatever its label."),
    epochs: int = typer.Option(10, help="Passes over the training images."),
    lr: float = typer.Option(1e-4, help="Learning rate of the prompt encoder and mask decoder (AdamW, cosine decay to lr/10)."),
    encoder_lr: Optional[float] = typer.Option(None, help="Learning rate of the image encoder with --train-image-encoder (default lr/10)."),
    batch_size: int = typer.Option(4, help="Images per forward pass (all their regions are prompted)."),
    accumulate: int = typer.Option(1, help="Forward passes per optimizer step (gradient accumulation)."),
    train_image_encoder: bool = typer.Option(False, "--train-image-encoder", help="Also train the image encoder (frozen by default)."),
    max_objects: int = typer.Option(16, help="Regions prompted per image per step."),
    image_size: Optional[int] = typer.Option(None, help="Model input side (default: the config's, 1024). Smaller is faster on a CPU; use the checkpoint at the same size."),
    val_fraction: float = typer.Option(0.2, help="Share of the images (per label) held out from training."),
    fraction: float = typer.Option(1.0, help="Share of the training images to train on (nested, as in evaluate-sam2 --fractions)."),
    seed: int = typer.Option(0, help="Seed of the split and of prompt sampling."),
    min_area: int = typer.Option(10, help="Ignore regions smaller than this many pixels."),
    mask_threshold: int = typer.Option(127, help="A mask pixel is set where its value is above this."),
    device: Optional[str] = _DEVICE,
    resume: bool = typer.Option(False, "--resume", help="Continue the run that wrote --out (from OUT.train-state.pt)."),
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate", help="Evaluate base and fine-tuned on the held-out images afterwards."),
    amg_points_per_side: int = typer.Option(16, help="Point grid side of the automatic mask generator in the evaluation (0: skip it)."),
    log_dir: Optional[Path] = typer.Option(None, help="TensorBoard folder (default OUT-tensorboard/; written only when tensorboard is installed)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Fine-tune SAM2 (prompt encoder + mask decoder) on labelled defect masks; save a stock SAM2 checkpoint."""
    from defectkit.sam2_finetune import DataOptions, FinetuneOptions, finetune_sam2 as run
    from defectkit.taxonomy import Taxonomy

    try:
        options = FinetuneOptions(epochs=epochs, lr=lr, encoder_lr=encoder_lr, batch_size=batch_size, accumulate=accumulate,
                                  train_image_encoder=train_image_encoder, max_objects=max_objects, seed=seed)
        data = DataOptions(format=format, taxonomy=Taxonomy.load(taxonomy) if taxonomy else None,
                           mask_threshold=mask_threshold, min_area=min_area, val_fraction=val_fraction, seed=seed)
        result = run(dataset, out, sam2_config, sam2_checkpoint, options, data, fraction=fraction, image_size=image_size,
                     device=device, resume=resume, evaluate_after=evaluate,
                     amg={"points_per_side": amg_points_per_side} if amg_points_per_side > 0 else None,
                     log_dir=log_dir, progress=not quiet)
    except DefectkitError as exc:
        _fail(exc)
    print_finetune_result(result, sam2_config)


def print_finetune_result(result, sam2_config: str) -> None:
    from defectkit.sam2_finetune import read_metadata, resolve_config

    out = Console()
    train_regions, heldout_regions = sum(len(i.instances) for i in result.train_images), result.split.regions[1]
    out.print(f"data: {len(result.train_images)} training images ({train_regions} regions), "
              f"{len(result.split.heldout)} held-out images ({heldout_regions} regions) from {result.split.source}", soft_wrap=True)
    for path, reason in result.split.skipped:
        out.print(f"[yellow]skipped[/yellow] {path}: {reason}", soft_wrap=True, markup=False)
    table = Table(title="fine-tuning (losses per region; held-out prompts fixed)")
    for column in ("epoch", "train loss", "focal", "dice", "iou", "held-out loss", "lr", "s"):
        table.add_column(column, justify="right")
    for r in result.history:
        held = r.get("heldout_total")
        table.add_row(str(r["epoch"]), f"{r['train_total']:.4f}", f"{r['train_focal']:.4f}", f"{r['train_dice']:.4f}",
                      f"{r['train_iou']:.4f}", "-" if held is None else f"{held:.4f}", f"{r['lr']:.2e}", f"{r['seconds']:.0f}")
    out.print(table)
    if result.evaluations:
        print_evaluations(result.evaluations, title="held-out images: base vs fine-tuned")
    meta = read_metadata(result.checkpoint)
    size = meta.get("image_size")
    note = "" if size == 1024 else f"; trained at image_size {size}: build it with hydra_overrides_extra=['++model.image_size={size}']"
    out.print(f"checkpoint: {result.checkpoint} (loads with sam2.build_sam.build_sam2({resolve_config(sam2_config)!r}, "
              f"ckpt_path=...){note})", soft_wrap=True, markup=False)
    out.print(f"resume state: {result.state}" + (f"; TensorBoard: {result.log_dir}" if result.log_dir else ""), soft_wrap=True)
    out.print(f"wall time: {result.seconds:.0f} s", soft_wrap=True)


def print_evaluations(evaluations: dict, title: str) -> None:
    from defectkit.sam2_finetune.evaluate import side_by_side

    header, rows = side_by_side(evaluations)
    table = Table(title=title)
    for column in header:
        table.add_column(column, justify="left" if column in ("subtype", "model") else "right",
                         overflow="fold" if column == "model" else "ellipsis")
    for row in rows:
        table.add_row(*row)
    out = Console()
    out.print(table)
    for name, evaluation in evaluations.items():
        masks = evaluation.amg_masks
        extra = f", {sum(masks) / len(masks):.1f} automatic masks per image" if masks else ""
        out.print(f"{name}: {evaluation.images} images in {evaluation.seconds:.0f} s{extra}", soft_wrap=True)


@app.command("evaluate-sam2")
def evaluate_sam2(
    dataset: Path = typer.Argument(..., help="Mask data set or COCO json file; its held-out images are evaluated."),
    sam2_config: str = typer.Option("sam2.1_hiera_t", help="SAM2 model config of the checkpoints."),
    sam2_checkpoint: Path = typer.Option(..., help="Checkpoint to evaluate (with --fractions: the base to fine-tune from)."),
    compare: list[Path] = typer.Option([], help="Other checkpoints (e.g. a fine-tuned one) to evaluate side by side; repeatable."),
    fractions: Optional[str] = typer.Option(None, help="Data study: fine-tune from --sam2-checkpoint on these shares of the training images, e.g. 0.1,0.25,0.5,1."),
    out_dir: Path = typer.Option(Path("out/sam2-study"), "--out", "-o", "--out-dir", help="Where the study writes its checkpoints, fractions.csv/.md and fractions.png."),
    format: str = typer.Option("masks", "--format", "-f", help="masks | coco"),
    taxonomy: Optional[Path] = typer.Option(None, "--taxonomy", "-t", help="Taxonomy YAML (subtypes by name); without it, raw labels."),
    val_fraction: float = typer.Option(0.2, help="Held-out share per label: use the value the checkpoint was trained with."),
    seed: int = typer.Option(0, help="Seed of the split: use the value the checkpoint was trained with."),
    image_size: Optional[int] = typer.Option(None, help="Model input side (default: as trained, else the config's)."),
    amg_points_per_side: int = typer.Option(16, help="Point grid side of the automatic mask generator (0: skip it)."),
    epochs: int = typer.Option(10, help="Study: epochs per fine-tuning."),
    lr: float = typer.Option(1e-4, help="Study: learning rate."),
    batch_size: int = typer.Option(4, help="Study: images per forward pass."),
    train_image_encoder: bool = typer.Option(False, "--train-image-encoder", help="Study: also train the image encoder."),
    min_area: int = typer.Option(10, help="Ignore regions smaller than this many pixels."),
    mask_threshold: int = typer.Option(127, help="A mask pixel is set where its value is above this."),
    device: Optional[str] = _DEVICE,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Score SAM2 checkpoints on held-out images (box/point mIoU and automatic recall per subtype), side by side; with --fractions, a study of how much training data fine-tuning needs."""
    from defectkit.sam2_finetune import DataOptions, FinetuneOptions, read_metadata
    from defectkit.sam2_finetune.evaluate import evaluate_checkpoints
    from defectkit.sam2_finetune.study import fraction_study, study_table
    from defectkit.taxonomy import Taxonomy

    try:
        shares = [float(f) for f in fractions.split(",") if f.strip()] if fractions else []
    except ValueError:
        _fail(DefectkitError(f"--fractions must be numbers separated by commas, got {fractions!r}"))
    try:
        data = DataOptions(format=format, taxonomy=Taxonomy.load(taxonomy) if taxonomy else None,
                           mask_threshold=mask_threshold, min_area=min_area, val_fraction=val_fraction, seed=seed)
        amg = {"points_per_side": amg_points_per_side} if amg_points_per_side > 0 else None
        split, evaluations = evaluate_checkpoints(dataset, sam2_config, [sam2_checkpoint, *compare], data,
                                                  image_size, device, amg, progress=not quiet)
        Console().print(f"{len(split.heldout)} held-out images ({split.regions[1]} regions) of {dataset}", soft_wrap=True)
        print_evaluations(evaluations, title="held-out images")
        if shares:
            options = FinetuneOptions(epochs=epochs, lr=lr, batch_size=batch_size, train_image_encoder=train_image_encoder, seed=seed)
            size = image_size or read_metadata(sam2_checkpoint).get("image_size")
            rows = fraction_study(split, sam2_config, sam2_checkpoint, out_dir, shares, options, amg, size,
                                  device=_device(device), progress=not quiet, base=next(iter(evaluations.values())))
    except DefectkitError as exc:
        _fail(exc)
    if shares:
        header, body = study_table(rows)
        table = Table(title=f"fine-tuning on shares of the {len(split.train)} training images, scored on the held-out images")
        for column in header:
            table.add_column(column, justify="right")
        for row in body:
            table.add_row(*row)
        Console().print(table)
        Console().print(f"table: {out_dir / 'fractions.csv'}, {out_dir / 'fractions.md'}; plot: {out_dir / 'fractions.png'}", soft_wrap=True)


def _device(device: str) -> str:
    from defectkit.devices import pick_device

    return str(pick_device(device))


_PROPOSER_DEFAULTS = TrainProposerConfig()


@app.command("train-proposer")
def train_proposer(
    src: Path = typer.Argument(..., help="Labelled data set: a folder (or a COCO json file) of whole images with masks, polygons or boxes."),
    format: str = typer.Option("masks", "--format", "-f", help="masks | voc | coco | yolo"),
    taxonomy: Path = typer.Option(..., "--taxonomy", "-t", help="Taxonomy YAML: which labels are defects and which background."),
    out: Path = typer.Option(..., "--out", "-o", help="Proposer bundle folder to write."),
    epochs: int = typer.Option(_PROPOSER_DEFAULTS.epochs, help=f"The most epochs of {_PROPOSER_DEFAULTS.steps_per_epoch} steps (stops early when validation stops improving)."),
    max_minutes: float = typer.Option(_PROPOSER_DEFAULTS.max_minutes, help="Time budget of the whole training, its checks and final choice included; the learning rate spans it (or --epochs, whichever ends first). 0: no budget."),
    image_size: int = typer.Option(_PROPOSER_DEFAULTS.image_size, help="Side of the training crops in pixels (a multiple of 32)."),
    batch_size: int = typer.Option(_PROPOSER_DEFAULTS.batch_size, help="Crops per step."),
    input_scale: float = typer.Option(_PROPOSER_DEFAULTS.input_scale, help="Resize every image by this factor before the network (0.5: half the side; more context per crop, 4x less work)."),
    architecture: str = typer.Option(_PROPOSER_DEFAULTS.network.architecture, help="fpn | unet | deeplabv3plus (segmentation-models-pytorch)."),
    encoder: str = typer.Option(_PROPOSER_DEFAULTS.network.encoder, help="Any timm model name."),
    loss: str = typer.Option(_PROPOSER_DEFAULTS.loss, help="dice+bce | dice+focal | tversky"),
    box_fill: str = typer.Option(_PROPOSER_DEFAULTS.box_fill, help="Boxes as weak masks: ellipse (inscribed) or box (filled)."),
    encoder_weights: str = typer.Option(_PROPOSER_DEFAULTS.encoder_weights, "--encoder-weights", "--backbone-weights", help="The encoder's start: 'imagenet' (the weights a pinned package carries; see `defectkit weights`), a defectkit backbone file, 'hub' (timm, online) or 'random'."),
    val_fraction: float = typer.Option(_PROPOSER_DEFAULTS.val_fraction, help="Share of the images held out to stop early and choose the threshold."),
    max_false_per_clean: float = typer.Option(_PROPOSER_DEFAULTS.max_false_per_clean, help="The threshold and minimum area find the most defects with at most this many false regions per defect-free held-out image."),
    seed: int = typer.Option(_PROPOSER_DEFAULTS.seed, help="Seed: split, crops and initial weights."),
    device: Optional[str] = _DEVICE,
    workers: Optional[int] = typer.Option(None, help="Processes drawing training crops ahead of the network; default 0 on a CPU, up to 8 on a GPU."),
    log_dir: Optional[Path] = typer.Option(None, help="TensorBoard folder (written when tensorboard is installed)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Train a segmentation network that marks defect pixels, from the user's own masks or boxes
    (resumes from OUT.train-state.pt when a run was interrupted)."""
    from dataclasses import replace

    import torch

    from defectkit.jobs.train_proposer import train_proposer as run
    from defectkit.segmenter.config import NetworkSpec
    from defectkit.taxonomy import Taxonomy
    from defectkit.threads import cpu_count

    torch.set_num_threads(cpu_count())
    try:
        network = NetworkSpec(architecture=architecture, encoder=encoder)
        config = replace(_PROPOSER_DEFAULTS, network=network, epochs=epochs, max_minutes=max_minutes, image_size=image_size,
                         batch_size=batch_size, loss=loss, input_scale=input_scale, box_fill=box_fill, encoder_weights=encoder_weights,
                         val_fraction=val_fraction, max_false_per_clean=max_false_per_clean, seed=seed)
        result = run(src, format, Taxonomy.load(taxonomy), out, config, device=_device(device), progress=not quiet, log_dir=log_dir,
                     workers=workers)
    except (DefectkitError, ValueError) as exc:
        _fail(exc)
    validation = result.metrics["validation"]
    Console().print(
        f"proposer written to {result.bundle}: {result.data['defect_images']} defect and "
        f"{result.data['images'] - result.data['defect_images']} clean images, {result.epochs} epochs ({result.metrics['steps']} steps) "
        f"in {result.seconds / 60:.1f} min; "
        f"validation region recall {validation['region_recall']:.2f}, precision {validation['region_precision']:.2f}, "
        f"false regions per clean image {validation['false_per_clean_image']}", soft_wrap=True)
    if result.skipped:
        raise typer.Exit(1)


@app.command()
def pretrain(
    dataset: Path = typer.Argument(..., help="Crop data set (folder with manifest.jsonl) to learn from, or a folder of whole images (unlabelled: random patches of them)."),
    out: Path = typer.Option(..., "--out", "-o", help="Backbone weights to write (.safetensors; a .json goes beside it)."),
    backbone: str = typer.Option("mobilenetv3_small_100", help="Any timm model name."),
    method: str = typer.Option("simclr", help="simclr (no labels) or supcon (uses the subtypes)."),
    epochs: int = typer.Option(30, help="The most passes over the crops."),
    max_minutes: float = typer.Option(0.0, help="Time budget; the learning rate's cosine spans it or --epochs, whichever ends first (0: --epochs only)."),
    batch_size: int = typer.Option(96, help="Crops per batch (two views each)."),
    image_size: int = typer.Option(64, help="Input size of the backbone in pixels."),
    mask_mode: str = typer.Option("channel", help="How the region mask reaches the backbone: none, channel or dim."),
    init: str = typer.Option("random", help="random, imagenet (the weights a pinned package carries; see `defectkit weights`), hub (timm, needs internet) or a weights file."),
    lr: float = typer.Option(2e-3, help="Peak learning rate (AdamW, cosine decay)."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same weights."),
    patch_size: int = typer.Option(96, help="A folder of images: side of the random patches, in the images' own pixels."),
    patches_per_image: int = typer.Option(8, help="A folder of images: patches cut from each image."),
    max_patch_size: int = typer.Option(0, help="A folder of images: cut windows of sides from --patch-size up to this (log-uniform), each shrunk to --patch-size; 0: all --patch-size."),
    exclude: list[Path] = typer.Option([], help="A folder of images: never sample the images of this crop data set (e.g. a split's test part) or .txt list; repeatable."),
    logdir: Optional[Path] = typer.Option(None, "--log-dir", "--logdir", help="TensorBoard log folder (needs tensorboard)."),
    device: Optional[str] = _DEVICE,
):
    """Contrastively pretrain a timm backbone on defect crops, or on patches of unlabelled images (resumes from OUT.state.pt if present)."""
    from defectkit.jobs.pretrain import PretrainConfig, pretrain as run_pretrain

    try:
        config = PretrainConfig(backbone=backbone, method=method, epochs=epochs, max_minutes=max_minutes, batch_size=batch_size,
                                image_size=image_size, mask_mode=mask_mode, init=init, lr=lr, seed=seed, device=device,
                                patch_size=patch_size, patches_per_image=patches_per_image, max_patch_size=max_patch_size)
        summary = run_pretrain(dataset, out, config, logdir=logdir, exclude=exclude)
    except DefectkitError as exc:
        _fail(exc)
    data = summary["data"]
    seen = f"{data['crops']} patches of {data['images']} images" if data.get("kind") == "image patches" else f"{data['crops']} crops"
    typer.echo(f"{out}: {summary['backbone']} pretrained with {summary['method']} for {summary['epochs']} epochs ({summary['steps']} steps) "
               f"on {seen}, final loss {summary['final_loss']:.4f}")


def _config(backbone, backbone_weights, image_size, mask_mode, texture, no_embedding, pca, seed, reject=None, device=None):
    from defectkit.classifier import ClassifierConfig

    return ClassifierConfig(
        backbone=backbone, weights=backbone_weights or "default", image_size=image_size, mask_mode=mask_mode,
        embedding=not no_embedding, texture=texture, pca=pca or None, rejection_threshold=reject, seed=seed,
        device=device and _device(device),
    )


def _cache(no_cache: bool):
    from defectkit.embed import EmbeddingCache

    return None if no_cache else EmbeddingCache()


_BACKBONE = typer.Option(None, "--backbone", help="timm model name (default mobilenetv3_small_100, or what the weights' JSON names).")
_WEIGHTS = typer.Option(None, "--backbone-weights", help="safetensors / state-dict file, 'imagenet' (the weights a pinned package carries, with --backbone tf_efficientnet_lite0 or another of `defectkit weights`), 'hub' (timm pretrained, online) or 'random'. Default: checkpoints/defectkit-backbone.safetensors if present, else random (with a warning).")
_IMAGE_SIZE = typer.Option(None, "--image-size", help="Backbone input size in px (default: what the weights' JSON names, 64 for the shipped backbone; 96 without one).")
_MASK_MODE = typer.Option(None, "--mask-mode", help="How the backbone sees the region mask: none | channel | dim (default: what the weights' JSON names, channel for the shipped backbone; none without one).")
_TEXTURE = typer.Option(False, "--texture", help="Add LBP, GLCM and HOG texture features.")
_NO_EMBEDDING = typer.Option(False, "--no-embedding", help="No backbone: geometry (and --texture) features only.")
_PCA = typer.Option(32, "--pca", help="Embedding PCA components, fitted on training data only (0: whole embedding).")
_SEED = typer.Option(0, "--seed", help="Seed for folds, learners and random backbone weights.")
_NO_CACHE = typer.Option(False, "--no-cache", help="Do not read or write the embedding cache ($DEFECTKIT_CACHE or ~/.cache/defectkit).")
_QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")


@app.command()
def train(
    dataset: Path = typer.Argument(..., help="Labelled crop data set (folder with manifest.jsonl, from `defectkit extract`)."),
    taxonomy: Path = typer.Option(..., "--taxonomy", "-t", help="Taxonomy YAML."),
    out: Path = typer.Option(..., "--out", "-o", help="Model bundle folder to write."),
    backbone: Optional[str] = _BACKBONE,
    backbone_weights: Optional[str] = _WEIGHTS,
    image_size: Optional[int] = _IMAGE_SIZE,
    mask_mode: Optional[str] = _MASK_MODE,
    texture: Optional[bool] = typer.Option(None, "--texture/--no-texture", help="Add LBP, GLCM and HOG texture features, or not (the embedding then as --no-embedding says); default: the grouped CV chooses texture, embedding or both (needs --cv)."),
    no_embedding: bool = _NO_EMBEDDING,
    pca: int = _PCA,
    reject: Optional[float] = typer.Option(None, "--min-confidence", "--reject", help="Report a defect as 'uncertain' when its subtype probability is below this (stored in the bundle; classify --min-confidence overrides it)."),
    cv: int = typer.Option(5, "--cv", help="Folds (grouped by source image) for the printed quality estimate; 0 skips it."),
    proposer_model: Optional[Path] = typer.Option(None, help="A proposer bundle (from train-proposer) for the model to carry; classify then uses it."),
    target_precision: Optional[float] = typer.Option(None, help="Choose, per subtype, the confidence below which classify says 'uncertain', so that the rest reach this precision on the CV's out-of-fold predictions."),
    max_false_alarms: float = typer.Option(0.05, help="Where the crops hold a proposer's hard negatives: choose, on the CV's out-of-fold predictions, the P(not background) below which classify drops a region, so that the proposer's false alarms leave at most this many false defects per defect-free image ('inf': no threshold)."),
    unlabelled: Optional[Path] = typer.Option(None, help="Self-training: a folder of unlabelled images; the model's confident predictions on them become more training crops."),
    rounds: int = typer.Option(2, help="--unlabelled: rounds of pseudo-labelling and retraining."),
    pseudo_precision: float = typer.Option(0.95, help="--unlabelled: a pseudo-label's class must reach this precision on the labelled crops' out-of-fold predictions, at its confidence."),
    pseudo_per_labelled: float = typer.Option(1.0, help="--unlabelled: at most this many pseudo-labels of a class per labelled crop of it, the most confident (keeps the classes' balance)."),
    proposer: str = typer.Option("auto", "--proposer", "-p", help="--unlabelled: the proposer that finds regions on the unlabelled images (auto: the model's learned one if --proposer-model, else classical)."),
    seed: int = _SEED,
    device: Optional[str] = _DEVICE,
    no_cache: bool = _NO_CACHE,
    quiet: bool = _QUIET,
    engine: str = _ENGINE,
    address: Optional[str] = _ADDRESS,
    workers: int = _WORKERS,
    cpus_per_worker: float = _CPUS_PER_WORKER,
    gpus_per_worker: float = _GPUS_PER_WORKER,
):
    """Train the two-level stacked classifier on labelled crops and save it as a model bundle."""
    from defectkit.taxonomy import Taxonomy
    from defectkit.threads import use_one_thread
    from defectkit.jobs.train import train as run_train

    use_one_thread()  # see defectkit.threads: spin-waiting threads slow the fit on busy cores
    try:
        config = _config(backbone, backbone_weights, image_size, mask_mode, bool(texture), no_embedding, pca, seed, reject, device)
        if not max_false_alarms >= 0:
            raise DefectkitError(f"--max-false-alarms {max_false_alarms}: a number of false alarms per image, 0 or more ('inf': no threshold)")
        if unlabelled is not None:
            from defectkit.jobs.self_train import SelfTrainOptions, self_train

            if target_precision is not None:
                raise DefectkitError("--target-precision and --unlabelled together are not supported: the labelled CV "
                                     "chooses the pseudo-label bars (--pseudo-precision)")
            _check_proposer(proposer)
            options = SelfTrainOptions(rounds=rounds, target_precision=pseudo_precision, per_labelled=pseudo_per_labelled, proposer=proposer)
            options.validate(cv)
        embed_on = _embed_on(engine, address, workers, cpus_per_worker, gpus_per_worker)
        common = dict(progress=not quiet, proposer=proposer_model, choose_features=texture is None, embed_on=embed_on,
                      max_false_alarms=None if math.isinf(max_false_alarms) else max_false_alarms)
        if unlabelled is None:
            result = run_train(dataset, Taxonomy.load(taxonomy), out, config, cv, _cache(no_cache), target_precision=target_precision, **common)
        else:
            result = self_train(dataset, unlabelled, Taxonomy.load(taxonomy), out, config, cv, _cache(no_cache), options=options, **common)
    except (DefectkitError, ValueError) as exc:
        _fail(exc)
    if selftraining := result.summary.get("self_training"):
        for done in selftraining["rounds"]:
            Console().print(f"self-training round {done['round']}: {sum(done['pseudo_labels'].values())} pseudo-labels "
                            f"({', '.join(f'{k} {v}' for k, v in done['pseudo_labels'].items()) or 'none'}) from "
                            f"{done['images_with_pseudo_labels']} of {selftraining['unlabelled_images']} unlabelled images"
                            + (f"; {done['unreadable_images']} could not be read" if done["unreadable_images"] else ""), soft_wrap=True)
    if choice := result.summary.get("feature_choice"):
        scores = ", ".join(f"{name} {score:.4f}" for name, score in choice["cv_macro_f1"].items())
        Console().print(f"features: {choice['chosen']} (grouped CV defect macro-F1: {scores}; the choice took {choice['seconds']:.0f} s)",
                        soft_wrap=True)
    if result.cv:
        print_scores({"hierarchy": result.cv.reports["hierarchy"]}, f"{result.cv.k}-fold CV grouped by source image")
        print_per_class(result.cv.reports["hierarchy"])
    if defect := (result.thresholds or {}).get("defect"):
        _print_defect_threshold(defect)
    Console().print(f"bundle written to {result.bundle} ({result.summary['crops']} crops, {result.seconds:.0f} s)", soft_wrap=True)


def _print_defect_threshold(defect: dict) -> None:
    """train's defect threshold, what it buys and what it costs; a warning where it costs most finds."""
    alarms, (before, after) = defect["false_alarms_per_image"], defect["matched_called_defect"]
    found = f"; the proposer's regions on labelled defects called defects {before:.0%} -> {after:.0%}" if before is not None else ""
    chosen = f"P(not background) >= {defect['threshold']}" if defect["threshold"] else "none needed"
    Console().print(f"defect threshold: {chosen} (out-of-fold, false defects per defect-free image {alarms[0]} -> {alarms[1]}, "
                    f"target {defect['target_false_alarms_per_image']}{found})", soft_wrap=True)
    if before and after < before / 2:
        console.print(f"warning: to keep the proposer's false alarms under {defect['target_false_alarms_per_image']} per "
                      f"defect-free image, this model keeps only {after:.0%} of the defects it finds ({before:.0%} without "
                      "the threshold): it cannot yet tell the proposer's false alarms from defects. Label more images, "
                      "defect-free ones too; or trade false alarms for finds with a higher --max-false-alarms (or a lower classify "
                      "--defect-threshold).", soft_wrap=True)


@app.command()
def tune(
    dataset: Path = typer.Argument(..., help="Labelled crop data set (folder with manifest.jsonl, from `defectkit extract`)."),
    taxonomy: Path = typer.Option(..., "--taxonomy", "-t", help="Taxonomy YAML."),
    out: Path = typer.Option(..., "--out", "-o", help="Model bundle folder to write with the best settings (the study and its plots go to OUT.tune/)."),
    trials: int = typer.Option(30, help="Finished trials the study should hold (a resumed or shared study counts every process's)."),
    cv: int = typer.Option(5, "--cv", help="Folds, grouped by source image, that score each trial."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default sqlite:///OUT.tune/study.db); e.g. postgresql://user:pass@host/db to share a study between machines."),
    study: Optional[str] = typer.Option(None, help="Study name (default defectkit-<data set folder>)."),
    timeout: Optional[float] = typer.Option(None, help="Stop starting trials after this many seconds (this process)."),
    no_final: bool = typer.Option(False, "--no-final", help="Only run trials; train no bundle."),
    backbone: Optional[str] = _BACKBONE,
    backbone_weights: Optional[str] = _WEIGHTS,
    image_size: Optional[int] = _IMAGE_SIZE,
    mask_mode: Optional[str] = _MASK_MODE,
    no_embedding: bool = typer.Option(False, "--no-embedding", help="Search only settings without the backbone's embedding."),
    seed: int = _SEED,
    device: Optional[str] = _DEVICE,
    no_cache: bool = _NO_CACHE,
    quiet: bool = _QUIET,
):
    """Choose the classifier's features, head and learner settings for this material by an Optuna
    study scored by grouped cross-validation, then train the bundle with the best."""
    from defectkit.jobs.tune import TuneOptions, tune as run_tune
    from defectkit.taxonomy import Taxonomy
    from defectkit.threads import use_one_thread

    use_one_thread()
    if trials < 1:
        _fail(DefectkitError(f"--trials must be at least 1, got {trials}"))
    try:
        config = _config(backbone, backbone_weights, image_size, mask_mode, False, no_embedding, 32, seed, device=device)
        options = TuneOptions(trials=trials, cv=cv, storage=storage, study=study, timeout=timeout, final=not no_final)
        result = run_tune(dataset, Taxonomy.load(taxonomy), out, config, options, _cache(no_cache), progress=not quiet,
                          log=lambda line: Console().print(line, soft_wrap=True))
    except (DefectkitError, ValueError) as exc:
        _fail(exc)
    Console().print(
        f"study {result.study_name} ({result.storage}): {result.trials} trials, {result.pruned} pruned; best trial "
        f"{result.best_trial}: defect macro-F1 {result.best_value:.4f} by {cv}-fold grouped CV with {result.best_params}", soft_wrap=True)
    if result.bundle is not None:
        Console().print(f"bundle written to {result.bundle}; plots in {result.work}", soft_wrap=True)


@app.command()
def evaluate(
    dataset: Path = typer.Argument(..., help="Labelled crop data set (folder with manifest.jsonl)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Trained bundle to evaluate on DATASET (held out)."),
    taxonomy: Optional[Path] = typer.Option(None, "--taxonomy", "-t", help="Taxonomy YAML (with --cv)."),
    cv: Optional[int] = typer.Option(None, "--cv", help="Cross-validate with K folds grouped by source image (with --taxonomy; default 5, as train's)."),
    baselines: bool = typer.Option(False, "--baselines", help="With --cv: also score each base learner alone and the flat stack, on the same folds."),
    report: Optional[Path] = typer.Option(None, "--report", "-r", help="Write the report JSON here."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Write confusion-matrix PNGs into this folder."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write report.html (confusion matrices, per-subtype table, reliability plot, the most confident mistakes with their crops) into this folder."),
    backbone: Optional[str] = _BACKBONE,
    backbone_weights: Optional[str] = _WEIGHTS,
    image_size: Optional[int] = _IMAGE_SIZE,
    mask_mode: Optional[str] = _MASK_MODE,
    texture: bool = _TEXTURE,
    no_embedding: bool = _NO_EMBEDDING,
    pca: int = _PCA,
    seed: int = _SEED,
    device: Optional[str] = _DEVICE,
    no_cache: bool = _NO_CACHE,
    quiet: bool = _QUIET,
    engine: str = _ENGINE,
    address: Optional[str] = _ADDRESS,
    workers: int = _WORKERS,
    cpus_per_worker: float = _CPUS_PER_WORKER,
    gpus_per_worker: float = _GPUS_PER_WORKER,
):
    """Score a bundle on held-out crops (--model), or cross-validate a fresh classifier (--taxonomy --cv K)."""
    from defectkit.jobs.evaluate import evaluate_bundle, evaluate_cv
    from defectkit.taxonomy import Taxonomy
    from defectkit.threads import use_one_thread

    use_one_thread()  # see defectkit.threads
    try:
        if cv is None:
            cv = 0 if model is not None else 5
        if (model is None) == (cv == 0) or (cv and taxonomy is None):
            raise DefectkitError("give either --model DIR (held-out evaluation) or --taxonomy FILE [--cv K] (cross-validation)")
        if baselines and not cv:
            raise DefectkitError("--baselines needs --cv K")
        embed_on = _embed_on(engine, address, workers, cpus_per_worker, gpus_per_worker)
        if model is not None:
            result = evaluate_bundle(dataset, model, _cache(no_cache), progress=not quiet, device=device and _device(device), embed_on=embed_on)
        else:
            config = _config(backbone, backbone_weights, image_size, mask_mode, texture, no_embedding, pca, seed, device=device)
            result = evaluate_cv(dataset, Taxonomy.load(taxonomy), config, cv, baselines, _cache(no_cache), not quiet, embed_on).to_dict()
    except (DefectkitError, ValueError) as exc:
        _fail(exc)
    title = f"{result['cv']['k']}-fold CV grouped by source image" if cv else f"{model} on {dataset}"
    print_scores({**result.get("baselines", {}), "hierarchy": result}, title)
    print_per_class(result)
    _write_outputs(result, report, plots, html, title)


def _write_outputs(result: dict, report: Optional[Path], plots: Optional[Path], html: Optional[Path] = None, title: str = "") -> None:
    import json

    from defectkit.images import atomic_write_text
    from defectkit.plots import confusion_pngs

    out = Console()
    if html is not None:
        from defectkit.report import write_evaluate_report

        out.print(f"HTML report: {write_evaluate_report(result, html, title)}", soft_wrap=True)
    if report is not None:
        atomic_write_text(report, json.dumps(result, indent=2) + "\n")
        out.print(f"report: {report}", soft_wrap=True)
    if plots is not None:
        for path in confusion_pngs(result, plots):
            out.print(f"plot: {path}", soft_wrap=True)


def _wide() -> Console:
    """Stdout console; 120 columns when not a terminal (logs, files), so tables never truncate names."""
    out = Console()
    return out if out.is_terminal else Console(width=120)


def print_scores(reports: dict, title: str) -> None:
    table = Table(title=title)
    for column in ("model", "category acc", "category macro-F1", "subtype acc", "subtype macro-F1", "defect recall", "background false alarms"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, r in reports.items():
        detection = r["detection"]
        cells = [r["category"]["accuracy"], r["category"]["macro_f1"], r["subtype"]["accuracy"], r["subtype"]["macro_f1"],
                 detection["defect_recall"], detection["background_false_alarm"]]
        table.add_row(name, *("-" if c is None else f"{c:.3f}" for c in cells))
    _wide().print(table)
    _wide().print("subtype macro-F1 averages the defect subtypes (background excluded).")
    main = reports.get("hierarchy", {})
    if "calibration" in main:
        _wide().print(f"expected calibration error of the confidence: {main['calibration']['ece']:.3f} (10 bins)")


def print_per_class(result: dict) -> None:
    table = Table(title="per subtype")
    for column in ("subtype", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "subtype" else "right")
    for name, r in result["subtype"]["per_class"].items():
        table.add_row(name, f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", str(r["support"]))
    _wide().print(table)


@app.command()
def weights():
    """The ImageNet weights that pinned packages carry (no hub needed): each architecture, its
    package, licence and whether its file is installed with the pinned sha256. Use them with
    train-proposer --encoder-weights imagenet, or --backbone-weights imagenet."""
    from defectkit.pretrained import PACKAGED, status

    table = Table()
    table.add_column("architecture", no_wrap=True)
    for column in ("package", "licence", "mean / std", "status"):
        table.add_column(column, overflow="fold")
    for name, found in PACKAGED.items():
        state = status(name)
        table.add_row(name, f"{found.package}=={found.version}", found.licence, f"{found.mean[0]} / {found.std[0]}",
                      "[green]ok[/green]" if state == "ok" else f"[red]{rich_escape(state)}[/red]")
    _wide().print(table)


@app.command("export-review")
def export_review(
    run: Path = typer.Argument(..., help="A classify (or segment) output folder."),
    to: str = typer.Option("labelstudio", "--to", help="labelstudio (tasks JSON with polygon predictions) | coco | cvat (CVAT for images 1.1 XML)."),
    root: Path = typer.Option(..., "--root", help="The folder that holds the images: paths in the export are relative to it."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="File to write (default RUN/review-<to>.json, .xml for cvat)."),
    url_prefix: str = typer.Option("", help="Put before each image path, e.g. /data/local-files/?d= for Label Studio's local storage."),
):
    """Write a run's predictions as pre-annotations for review, the least confident first; a
    reviewed Label Studio export comes back with `extract --format labelstudio`."""
    from defectkit.review import export_review as run_export

    out = out or run / f"review-{to}.{'xml' if to == 'cvat' else 'json'}"
    try:
        count = run_export(run, to, root, out, url_prefix)
    except DefectkitError as exc:
        _fail(exc)
    console.print(f"{count} images written to {out}, the most useful to review first", soft_wrap=True, markup=False)


@app.command()
def classify(
    inputs: list[Path] = typer.Argument(..., help="Image files, folders (recursed) or .txt lists of paths."),
    model: Path = typer.Option(..., "--model", "-m", help="Model bundle folder (models/<name>)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    proposer: str = _PROPOSER,
    proposer_model: Optional[str] = typer.Option(None, help="Proposer bundle for learned/auto/hybrid (default: the one --model carries)."),
    sam2_checkpoint: Optional[str] = _SAM2_CHECKPOINT,
    sam2_config: Optional[str] = _SAM2_CONFIG,
    option: list[str] = typer.Option([], "--option", "-O", help="Proposer setting KEY=VALUE (repeatable)."),
    min_confidence: Optional[float] = typer.Option(None, help="Below this confidence a defect is reported as 'uncertain' (every subtype; default: the model's own thresholds, if it has them)."),
    threshold: list[str] = typer.Option([], "--threshold", help="SUBTYPE=X: this subtype's confidence threshold (repeatable; over --thresholds, --min-confidence and the model's own)."),
    thresholds_file: Optional[Path] = typer.Option(None, "--thresholds", help="YAML file of per-subtype confidence thresholds ('crack: 0.7', '\"*\": 0.5' for every subtype), over the model's own."),
    defect_threshold: Optional[float] = typer.Option(None, help="A region whose P(not background) is below this is background (default: the model's own, chosen by train --max-false-alarms; 0: none)."),
    keep_background: bool = typer.Option(False, help="Also report proposals classified as background."),
    min_area: int = typer.Option(10, help="Drop regions smaller than this many pixels."),
    coco: bool = typer.Option(False, "--coco", help="Also write coco.json for the whole run."),
    overlays: str = _OVERLAYS,
    overlay_format: str = _OVERLAY_FORMAT,
    resume: bool = typer.Option(False, help="Keep images whose results already exist in --out."),
    device: Optional[str] = _DEVICE,
    engine: str = _ENGINE,
    address: Optional[str] = _ADDRESS,
    workers: int = _WORKERS,
    cpus_per_worker: float = _CPUS_PER_WORKER,
    gpus_per_worker: float = _GPUS_PER_WORKER,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Find and classify the defects on images: per-image JSON and overlay, images.csv (a verdict per
    image), summary.csv (a row per defect), errors.jsonl."""
    from collections import Counter

    from defectkit.jobs.batch import expand_inputs
    from defectkit.jobs.classify import ClassifyOptions, classify_images
    from defectkit.pipeline import DefectClassifier, checked_probability
    from defectkit.propose import parse_options
    from defectkit.threads import use_one_thread

    # An image's crops make a batch of a handful and its classification a few rows: one thread
    # does it, and on busy cores spin-waiting OpenMP / BLAS threads made them many times slower.
    use_one_thread()
    try:
        options = ClassifyOptions(coco=coco, overlays=overlays, overlay_format=overlay_format, resume=resume)
        proposer_options = parse_options(option)  # these, the inputs and the proposer's name checked before the model loads
        expand_inputs(inputs)
        thresholds = confidence_thresholds(thresholds_file, min_confidence, threshold)
        _check_proposer(proposer)
        device = device and _device(device)
        if defect_threshold is not None:
            checked_probability(defect_threshold, "--defect-threshold")
        settings = dict(min_area=min_area, min_confidence=thresholds or None, keep_background=keep_background, defect_threshold=defect_threshold)
        _check_engine(engine)
        if engine == "ray":
            from defectkit.jobs.classify import classify_on_ray

            if sam2_checkpoint or sam2_config or proposer_model:
                raise DefectkitError("--engine ray takes the proposer the model carries, or one by name; not --sam2-* or --proposer-model")
            _start_ray(address, workers, cpus_per_worker, gpus_per_worker, f"proposer {proposer}")
            report, rows = classify_on_ray(inputs, out, model, options, progress=not quiet, proposer=proposer,
                                           proposer_options=proposer_options, workers=workers, cpus_per_worker=cpus_per_worker,
                                           gpus_per_worker=gpus_per_worker, device=device, classifier_options=settings)
            chosen_name = proposer
        else:
            classifier = DefectClassifier.load(model, proposer, sam2_checkpoint, sam2_config, proposer_model, proposer_options,
                                               device=device, **settings)
            chosen = classifier.proposer
            console.print(f"proposer: {proposer_choice(chosen)}", soft_wrap=True, markup=False)
            if (warning := classifier.negatives_warning()) is not None:
                console.print(f"warning: {warning}", soft_wrap=True, markup=False, style="yellow")
            report, rows = classify_images(inputs, out, classifier, options, progress=not quiet)
            chosen_name = chosen.describe().get("name")
    except (DefectkitError, ValueError) as exc:
        _fail(exc)
    verdicts = Counter(r["verdict"] for r in report.images)
    print_run_summary(Counter(r["subtype"] or r["category"] or "defect" for r in rows), verdicts)
    rate = report.done / report.seconds if report.seconds else 0.0
    typer.echo(f"proposer: {chosen_name}; {report.done} image(s) classified ({rate:.1f} img/s), "
               f"{verdicts['defect'] + verdicts['uncertain']} with defects, {len(rows)} defect(s), {report.skipped} kept from before, "
               f"{len(report.failed)} failed; results in {out} (images.csv: one verdict per image)")
    if report.failed:
        console.print(f"failed images are listed in {report.errors_path}", markup=False)
        raise typer.Exit(1)


def confidence_thresholds(file: Path | None, every: float | None, pairs: list[str]) -> dict[str, float]:
    """Per-subtype confidence thresholds ("*": every subtype): from ``file`` (YAML), then ``every``
    (--min-confidence), then each SUBTYPE=X of ``pairs`` (--threshold); a later one wins."""
    import yaml

    from defectkit.yaml_files import load_yaml

    thresholds: dict[str, float] = {}
    if file is not None:
        try:
            data = load_yaml(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise DefectkitError(f"{file}: cannot read the thresholds ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data.values()):
            raise DefectkitError(f"{file}: thresholds must be a mapping of SUBTYPE: number, e.g. 'crack: 0.7'")
        thresholds.update({str(k): float(v) for k, v in data.items()})
    if every is not None:
        thresholds["*"] = every
    for pair in pairs:
        subtype, sep, value = pair.partition("=")
        try:
            thresholds[subtype.strip()] = float(value)
        except ValueError:
            raise DefectkitError(f"--threshold {pair!r} is not SUBTYPE=X with X a number") from None
        if not sep:
            raise DefectkitError(f"--threshold {pair!r} is not SUBTYPE=X")
    return thresholds


def print_run_summary(subtypes: dict[str, int], verdicts: dict[str, int]) -> None:
    """Defects per subtype and images per verdict, side by side."""
    from defectkit.export import VERDICTS

    table = Table(box=None, pad_edge=False)
    table.add_column("subtype")
    table.add_column("defects", justify="right")
    table.add_column("  verdict")
    table.add_column("images", justify="right")
    subtype_rows = sorted(subtypes.items(), key=lambda item: (-item[1], item[0]))
    verdict_rows = [(v, verdicts.get(v, 0)) for v in VERDICTS]
    for i in range(max(len(subtype_rows), len(verdict_rows))):
        subtype, count = subtype_rows[i] if i < len(subtype_rows) else ("", "")
        verdict, images = verdict_rows[i] if i < len(verdict_rows) else ("", "")
        table.add_row(subtype, str(count), f"  {verdict}", str(images))
    console.print(table)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
