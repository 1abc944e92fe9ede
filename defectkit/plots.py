"""Confusion-matrix pictures for evaluation reports (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def confusion_pngs(report: dict, folder: str | Path, prefix: str = "") -> list[Path]:
    """Write ``<prefix>category_confusion.png`` and ``<prefix>subtype_confusion.png``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for level in ("category", "subtype"):
        confusion = report["confusion"][level]
        matrix = np.asarray(confusion["matrix"], dtype=float)
        rows, columns = confusion["labels"], confusion["predicted_labels"]
        share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        size = 1.2 + 0.7 * len(columns)
        figure, axes = plt.subplots(figsize=(size + 1.5, size))
        image = axes.imshow(share, cmap="Blues", vmin=0, vmax=1)
        axes.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
        axes.set_yticks(range(len(rows)), rows)
        axes.set_xlabel("predicted")
        axes.set_ylabel("true")
        for i in range(len(rows)):
            for j in range(len(columns)):
                axes.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", color="white" if share[i, j] > 0.5 else "black", fontsize=8)
        accuracy = report[level]["accuracy"]
        axes.set_title(f"{level}: accuracy {accuracy:.3f}, n={report['n']}")
        figure.colorbar(image, ax=axes, fraction=0.046, label="share of true class")
        figure.tight_layout()
        path = folder / f"{prefix}{level}_confusion.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        paths.append(path)
    return paths


def reliability_png(calibration: dict, path: str | Path) -> Path:
    """Accuracy against confidence per bin (a calibrated model lies on the diagonal)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = np.asarray(calibration["bins"], dtype=float).reshape(-1, 3)
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="calibrated")
    axes.scatter(bins[:, 0], bins[:, 1], s=20 + 200 * bins[:, 2] / max(bins[:, 2].max(), 1), label="bins (size: crops)")
    axes.plot(bins[:, 0], bins[:, 1])
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence")
    axes.set_ylabel("accuracy")
    axes.set_title(f"reliability: ECE {calibration['ece']:.3f}")
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
