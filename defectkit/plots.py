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
