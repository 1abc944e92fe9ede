"""The `defectkit` command line: a thin layer that parses arguments and calls the library."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from defectkit.errors import DefectkitError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Find and name surface defects on industrial images.")
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """defectkit: propose, polygonize, embed and classify surface defects."""


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(2)


@app.command()
def extract(
    src: Path = typer.Argument(..., help="Labelled data set: a folder (or a COCO json file)."),
    out: Path = typer.Argument(..., help="Output folder for manifest.jsonl and crops/."),
    format: str = typer.Option("masks", "--format", "-f", help="masks | voc | coco | crops"),
    taxonomy: Path = typer.Option(..., "--taxonomy", "-t", help="Taxonomy YAML (categories, subtypes, aliases)."),
    mask_threshold: int = typer.Option(127, help="A mask pixel is set where its value is above this."),
    min_area: int = typer.Option(10, help="Drop regions smaller than this many pixels."),
    polygon_tolerance: float = typer.Option(1.0, help="Polygon simplification tolerance in pixels."),
    crop_size: int = typer.Option(128, help="Side of the square crops in pixels."),
    padding: float = typer.Option(0.25, help="Context around a region, as a share of its longer side."),
    background_per_image: int = typer.Option(2, help="Background regions sampled per defect-free image."),
    background_in_defect_images: int = typer.Option(0, help="Background regions sampled per defect image, away from its defects."),
    seed: int = typer.Option(0, help="Seed for background sampling (same seed, same output)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Turn a labelled data set into a crop data set (manifest.jsonl + crop and mask PNGs)."""
    from defectkit.crops import CropSpec
    from defectkit.extract import ExtractOptions, extract as run_extract
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
            seed=seed,
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


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
