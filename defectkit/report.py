"""``report.html``: a run at a glance, opened from its output folder (relative links only).

Counts per verdict and per subtype, and a gallery of the overlays, failed and uncertain images
first and then the least confident, filterable by subtype, verdict and confidence. The images'
data is embedded once as JSON and a few lines of script page through it, so a run of many
thousands of images opens as fast as one of ten; thumbnails load lazily.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from defectkit.export import VERDICTS
from defectkit.images import atomic_write_text

PAGE_SIZE = 120


def write_run_report(out: Path, images: list[dict], defects: list[dict], files: dict[str, tuple[str | None, str | None]],
                     command: str, title: str = "") -> Path:
    """``images``: the verdict rows; ``defects``: the per-defect rows; ``files``: per image its
    (overlay, JSON) file names in ``out`` (None where there is none)."""
    subtypes_of: dict[str, set[str]] = {}
    for row in defects:
        subtypes_of.setdefault(row["image"], set()).add(row["subtype"] or row["category"] or "defect")
    data = []
    for row in images:
        overlay, record = files.get(row["image"], (None, None))
        confidence = row.get("worst_confidence")
        data.append({
            "image": _text(row["image"]), "verdict": row["verdict"], "defects": row.get("defects", 0),
            "worst": row.get("worst_subtype") or "", "confidence": float(confidence) if confidence not in (None, "") else None,
            "subtypes": sorted(subtypes_of.get(row["image"], ())), "overlay": overlay, "json": record,
        })
    verdicts = Counter(row["verdict"] for row in images)
    subtypes = Counter(row["subtype"] or row["category"] or "defect" for row in defects)
    html = _render(
        "run_report.html.j2",
        command=command, title=title, images=images, page_size=PAGE_SIZE,
        verdicts=[(v, verdicts[v]) for v in VERDICTS],
        subtypes=sorted(subtypes.items(), key=lambda item: (-item[1], item[0])),
        data=json.dumps(data).replace("</", "<\\/"),  # no text in the data can close the script element
    )
    path = out / "report.html"
    atomic_write_text(path, html)
    return path


def _render(template: str, **context) -> str:
    """A template of ``defectkit/templates``, HTML-escaped."""
    environment = Environment(loader=PackageLoader("defectkit", "templates"), autoescape=select_autoescape(["html", "j2"]))
    return environment.get_template(template).render(**context)


def _text(name: str) -> str:
    """A file name as text for the page (bytes that are not UTF-8 shown as replacement marks)."""
    return os.fsencode(name).decode("utf-8", errors="replace")


def write_evaluate_report(result: dict, folder: Path, title: str, mistakes: int = 48) -> Path:
    """``folder/report.html`` for an evaluation: scores, per-subtype table, confusion matrices at
    both levels, a reliability plot, and the most confident mistakes with their crops (copied
    into ``folder/mistakes/`` so that the folder stands on its own)."""
    import shutil

    from defectkit.plots import confusion_pngs, reliability_png

    folder.mkdir(parents=True, exist_ok=True)
    figures = [p.name for p in confusion_pngs(result, folder)]
    if result.get("calibration"):
        figures.append(reliability_png(result["calibration"], folder / "reliability.png").name)
    wrong = [p for p in result.get("predictions", []) if p["true"] != p["predicted"]]
    worst = sorted(wrong, key=lambda p: -p["confidence"])[:mistakes]
    (folder / "mistakes").mkdir(exist_ok=True)
    shown = []
    for index, mistake in enumerate(worst):
        crop = Path(mistake["crop"] or "")
        picture = f"mistakes/{index:03d}{crop.suffix or '.png'}"
        if crop.is_file():
            shutil.copyfile(crop, folder / picture)
        shown.append({**mistake, "picture": picture, "image": _text(str(mistake["image"]))})
    html = _render("evaluate_report.html.j2", title=title, report=result, figures=figures, mistakes=shown, wrong=len(wrong))
    path = folder / "report.html"
    atomic_write_text(path, html)
    return path
