"""Write evaluation/tuning results: CSV, Markdown table and PNG plots under a results folder."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def run_folder(kind: str, dataset_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """``results/<kind>-<dataset name>-<UTC time>/`` (created)."""
    base = Path(out_dir) if out_dir else RESULTS_DIR
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    folder = base / f"{kind}-{Path(dataset_dir).resolve().name}-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def metrics_frame(models: dict[str, dict[str, float]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(models, orient="index")
    frame.index.name = "model"
    return frame


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table (floats to 4 decimals) without the optional ``tabulate`` dep."""

    def cell(value: object) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    header = [frame.index.name or "", *map(str, frame.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in frame.iterrows():
        lines.append("| " + " | ".join([str(index), *map(cell, row.tolist())]) + " |")
    return "\n".join(lines)


def write_table(frame: pd.DataFrame, folder: Path, name: str) -> dict[str, str]:
    csv_path, md_path = folder / f"{name}.csv", folder / f"{name}.md"
    frame.to_csv(csv_path)
    md_path.write_text(markdown_table(frame) + "\n", encoding="utf-8")
    return {"csv": str(csv_path), "markdown": str(md_path)}


def plot_metrics(frame: pd.DataFrame, k: int, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in frame.columns if c.endswith(f"@{k}")]
    ax = frame[columns].T.plot.bar(figsize=(9, 4.5), rot=0)
    ax.set_ylabel("value")
    ax.set_title(title)
    ax.legend(title="model")
    ax.grid(axis="y", alpha=0.3)
    plt.tight_layout()
    plt.savefig(path, dpi=110)
    plt.close()
    return path


def plot_trials(trials: pd.DataFrame, metric: str, path: Path, title: str) -> Path:
    """Validation metric against regularization and alpha (colour = factors), one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for ax, column in zip(axes, ("regularization", "alpha", "frequency_exponent"), strict=True):
        points = ax.scatter(trials[column], trials[metric], c=trials["factors"], cmap="viridis")
        if column != "frequency_exponent":
            ax.set_xscale("log")
        ax.set_xlabel(column)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"validation {metric}")
    fig.colorbar(points, ax=axes, label="factors")
    fig.suptitle(title)
    plt.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
