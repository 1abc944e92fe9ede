"""How much data fine-tuning needs: fine-tune from the same base checkpoint on nested shares of the
training images (10 %, 25 %, 50 %, 100 % by default), evaluate each on the same held-out images,
and write a table (CSV and Markdown) and a plot (PNG) beside the fine-tuned checkpoints.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from defectkit.images import atomic_write_bytes, atomic_write_text
from defectkit.sam2_finetune.data import Split, training_subset
from defectkit.sam2_finetune.evaluate import METRICS, Evaluation, evaluate, markdown_table
from defectkit.sam2_finetune.model import load_model, resolve_config, save_checkpoint
from defectkit.sam2_finetune.train import FinetuneOptions, finetune

DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
LABELS = {"box_miou": "box-prompt mIoU", "point_miou": "point-prompt mIoU", "amg_recall": "automatic recall@0.5"}


@dataclass
class StudyRow:
    fraction: float  # 0.0: the base checkpoint, not fine-tuned
    images: int
    regions: int
    evaluation: Evaluation
    checkpoint: Path | None = None
    history: list[dict] = field(default_factory=list)

    def values(self) -> dict:
        return self.evaluation.summary()["all"]


def fraction_study(split: Split, config: str, base_checkpoint: str | Path, out_dir: str | Path,
                   fractions=DEFAULT_FRACTIONS, options: FinetuneOptions | None = None, amg: dict | None = None,
                   image_size: int | None = None, device=None, progress: bool = True,
                   base: Evaluation | None = None) -> list[StudyRow]:
    """Rows for the base model and for each fraction; writes ``fractions.csv``, ``fractions.md``,
    ``fractions.png`` and ``finetuned-<pct>pct.pt`` into ``out_dir``."""
    options = options or FinetuneOptions()
    out_dir = Path(out_dir)
    config_name = resolve_config(config)
    if base is None:
        model = load_model(config, base_checkpoint, device or "cpu", image_size)
        base = evaluate(model, split.heldout, amg=amg, progress=progress, desc="evaluating base")
        del model
    rows = [StudyRow(0.0, 0, 0, base)]
    for fraction in sorted(set(float(f) for f in fractions)):
        train = training_subset(split.train, fraction, options.seed)
        model = load_model(config, base_checkpoint, device or "cpu", image_size)
        history = finetune(model, train, (), options, progress=progress)
        checkpoint = save_checkpoint(model, out_dir / f"finetuned-{round(fraction * 100)}pct.pt", {
            "config": config_name, "base_checkpoint": str(base_checkpoint), "image_size": int(model.image_size),
            "dataset": str(split.source), "fraction": fraction, "train_images": [i.key for i in train],
            "heldout_images": [i.key for i in split.heldout], "history": history,
        })
        evaluation = evaluate(model, split.heldout, amg=amg, progress=progress, desc=f"evaluating {fraction:.0%}")
        rows.append(StudyRow(fraction, len(train), sum(len(i.instances) for i in train), evaluation, checkpoint, history))
        del model
    write_study(rows, out_dir)
    return rows


def study_table(rows: list[StudyRow]) -> tuple[list[str], list[list[str]]]:
    header = ["train images", "share", "regions", "train loss", "box mIoU", "point mIoU", "auto recall@0.5"]
    body = []
    for row in rows:
        values = row.values()
        loss = f"{row.history[-1]['train_total']:.4f}" if row.history else "-"
        share = "base" if row.fraction == 0 else f"{row.fraction:.0%}"
        body.append([str(row.images), share, str(row.regions), loss,
                     *["-" if values[m] is None else f"{values[m]:.3f}" for m in METRICS]])
    return header, body


def write_study(rows: list[StudyRow], out_dir: Path) -> dict[str, Path]:
    header, body = study_table(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(body)
    paths = {"csv": out_dir / "fractions.csv", "md": out_dir / "fractions.md", "png": out_dir / "fractions.png"}
    atomic_write_text(paths["csv"], buffer.getvalue())
    atomic_write_text(paths["md"], markdown_table(header, body))
    atomic_write_bytes(paths["png"], plot(rows))
    return paths


def plot(rows: list[StudyRow]) -> bytes:
    """PNG bytes: each metric against the number of training images, the base model as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tuned = [r for r in rows if r.fraction > 0]
    base = next((r for r in rows if r.fraction == 0), None)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for metric, color in zip(METRICS, ("tab:blue", "tab:orange", "tab:green")):
        points = [(r.images, r.values()[metric]) for r in tuned if r.values()[metric] is not None]
        if points:
            ax.plot(*zip(*points), marker="o", color=color, label=LABELS[metric])
        if base is not None and base.values()[metric] is not None:
            ax.axhline(base.values()[metric], color=color, linestyle="--", linewidth=1, label=f"{LABELS[metric]}, base")
    ax.set_xlabel("training images")
    ax.set_ylabel("held-out score")
    ax.set_ylim(0, 1)
    if tuned:
        ax.set_xticks([r.images for r in tuned])
        ax.set_xticklabels([f"{r.images}\n({r.fraction:.0%})" for r in tuned])
    ax.set_title("SAM2 fine-tuning: score against training data")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
