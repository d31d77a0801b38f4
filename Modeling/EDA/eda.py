"""Exploratory look at a canonical dataset: a few PNG plots and a short markdown summary.

    python -m Modeling.EDA.eda Prod/data_ingest --out Modeling/EDA/out/default

Plots: item popularity long tail (with cumulative share), interactions per user, price histograms
by category, items and interactions per category, daily events by type. Works on generated and
imported datasets (plots that need a missing column say so instead).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from Prod.common.canonical_format import INTERACTIONS_FILE, ITEMS_FILE, USERS_FILE  # noqa: E402

DPI = 110


def load_dataset(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The three CSVs of a canonical dataset, ids as strings, timestamps as UTC datetimes."""
    folder = Path(folder)
    users = pd.read_csv(folder / USERS_FILE, dtype={"user_id": str}, keep_default_na=False)
    items = pd.read_csv(
        folder / ITEMS_FILE,
        dtype={"item_id": str, "brand": str, "category": str},
        keep_default_na=False,
        na_values={"price": [""], "avg_rating": [""]},
    )
    interactions = pd.read_csv(
        folder / INTERACTIONS_FILE, dtype={"user_id": str, "item_id": str, "event": "category"}
    )
    stamps = interactions["timestamp"]
    if pd.api.types.is_numeric_dtype(stamps):
        interactions["timestamp"] = pd.to_datetime(stamps, unit="s", utc=True)
    else:
        interactions["timestamp"] = pd.to_datetime(stamps, utc=True, format="ISO8601")
    return users, items, interactions


def summarize(
    users: pd.DataFrame, items: pd.DataFrame, interactions: pd.DataFrame
) -> dict[str, Any]:
    """Headline numbers: sizes, density, long-tail shares, activity, coverage of metadata."""
    per_item = interactions["item_id"].value_counts()
    per_user = interactions["user_id"].value_counts()
    pairs = interactions[["user_id", "item_id"]].drop_duplicates()
    sorted_counts = per_item.to_numpy()
    prices = pd.to_numeric(items["price"], errors="coerce")
    return {
        "users": len(users),
        "items": len(items),
        "interactions": len(interactions),
        "distinct_user_item_pairs": len(pairs),
        "density": len(pairs) / max(len(users) * len(items), 1),
        "events": {str(k): int(v) for k, v in interactions["event"].value_counts().items()},
        "items_never_interacted": int(len(items) - per_item.index.isin(items["item_id"]).sum()),
        "top_1pct_items_share": _top_share(sorted_counts, 0.01),
        "top_10pct_items_share": _top_share(sorted_counts, 0.10),
        "item_gini": gini(sorted_counts),
        "interactions_per_user": {
            "median": float(per_user.median()),
            "mean": float(per_user.mean()),
            "p90": float(per_user.quantile(0.9)),
            "max": int(per_user.max()),
        },
        "categories": int(items["category"].replace("", np.nan).nunique()),
        "brands": int(items["brand"].replace("", np.nan).nunique()),
        "price_known_share": float(prices.notna().mean()),
        "price_median": float(prices.median()) if prices.notna().any() else None,
        "first_event": str(interactions["timestamp"].min()),
        "last_event": str(interactions["timestamp"].max()),
    }


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of interaction counts (0 = every item equally popular, 1 = one item)."""
    values = np.sort(np.asarray(counts, dtype=float))
    if values.sum() == 0:
        return 0.0
    n = len(values)
    ranks = np.arange(1, n + 1)
    return float((2 * (ranks * values).sum()) / (n * values.sum()) - (n + 1) / n)


def _top_share(sorted_desc: np.ndarray, fraction: float) -> float:
    top = max(1, int(round(len(sorted_desc) * fraction)))
    return float(sorted_desc[:top].sum() / max(sorted_desc.sum(), 1))


def plot_popularity(interactions: pd.DataFrame, path: Path) -> None:
    counts = interactions["item_id"].value_counts().to_numpy()
    ranks = np.arange(1, len(counts) + 1)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(ranks, counts, color="tab:blue", lw=1.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("item rank (by interactions)")
    ax.set_ylabel("interactions per item (log)", color="tab:blue")
    share = np.cumsum(counts) / counts.sum()
    twin = ax.twinx()
    twin.plot(ranks, share, color="tab:orange", lw=1.5)
    twin.set_ylabel("cumulative share of interactions", color="tab:orange")
    twin.set_ylim(0, 1.02)
    top10 = _top_share(counts, 0.10)
    ax.set_title(f"Item popularity long tail: top 10% of items get {top10:.0%} of interactions")
    _save(fig, path)


def plot_user_activity(interactions: pd.DataFrame, path: Path) -> None:
    per_user = interactions["user_id"].value_counts().to_numpy()
    bins = np.unique(np.logspace(0, np.log10(per_user.max() + 1), 40).astype(int))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.hist(per_user, bins=bins, color="tab:green", edgecolor="white")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axvline(
        np.median(per_user), color="black", ls="--", label=f"median {np.median(per_user):.0f}"
    )
    ax.set_xlabel("interactions per user (log bins)")
    ax.set_ylabel("users (log)")
    ax.set_title(f"Interactions per user ({len(per_user):,} users)")
    ax.legend()
    _save(fig, path)


def plot_prices(items: pd.DataFrame, path: Path) -> None:
    prices = pd.to_numeric(items["price"], errors="coerce")
    known = items.assign(price=prices)[prices > 0]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if known.empty:
        ax.text(0.5, 0.5, "no prices in this dataset", ha="center", va="center", fontsize=14)
        ax.set_axis_off()
    else:
        bins = np.logspace(np.log10(known["price"].min()), np.log10(known["price"].max()), 40)
        top = known["category"].replace("", "(none)").value_counts().index[:8]
        for category in top:
            values = known.loc[known["category"].replace("", "(none)") == category, "price"]
            ax.hist(
                values,
                bins=bins,
                histtype="step",
                lw=1.6,
                label=f"{category} (median ${values.median():,.0f})",
            )
        ax.set_xscale("log")
        ax.set_xlabel("price ($, log scale)")
        ax.set_ylabel("items")
        ax.legend(fontsize=8)
    ax.set_title("Price distribution by category")
    _save(fig, path)


def plot_categories(items: pd.DataFrame, interactions: pd.DataFrame, path: Path) -> None:
    category_of = items.set_index("item_id")["category"].replace("", "(none)")
    item_counts = category_of.value_counts()
    event_counts = interactions["item_id"].map(category_of).fillna("(unknown item)").value_counts()
    top = item_counts.index[:15]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    axes[0].barh(top, item_counts[top], color="tab:purple")
    axes[0].set_title("items per category")
    axes[1].barh(top, event_counts.reindex(top).fillna(0), color="tab:red")
    axes[1].set_title("interactions per category")
    axes[0].invert_yaxis()
    _save(fig, path)


def plot_events_over_time(interactions: pd.DataFrame, path: Path) -> None:
    daily = (
        interactions.assign(day=interactions["timestamp"].dt.floor("D"))
        .groupby(["day", "event"], observed=True)
        .size()
        .unstack(fill_value=0)
    )
    span_days = (interactions["timestamp"].max() - interactions["timestamp"].min()).days
    if span_days > 730:  # years of ratings: weekly resolution is unreadable, use months
        daily = daily.resample("MS").sum()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for event in daily.columns:
        ax.plot(daily.index, daily[event], lw=1.2, label=str(event))
    ax.set_yscale("log")
    ax.set_ylabel("events per day" if span_days <= 730 else "events per month")
    ax.set_title("Events over time by type")
    ax.legend()
    fig.autofmt_xdate()
    _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


PLOTS = {
    "popularity_long_tail.png": lambda u, i, x, p: plot_popularity(x, p),
    "interactions_per_user.png": lambda u, i, x, p: plot_user_activity(x, p),
    "price_by_category.png": lambda u, i, x, p: plot_prices(i, p),
    "categories.png": lambda u, i, x, p: plot_categories(i, x, p),
    "events_over_time.png": lambda u, i, x, p: plot_events_over_time(x, p),
}


def run_eda(dataset_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write the PNGs and ``summary.md`` (+ ``summary.json``) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    users, items, interactions = load_dataset(dataset_dir)
    for name, plot in PLOTS.items():
        plot(users, items, interactions, out / name)
    summary = summarize(users, items, interactions)
    summary["dataset"] = str(dataset_dir)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(_markdown(summary))
    summary["files"] = sorted([*PLOTS, "summary.md", "summary.json"])
    return summary


def _markdown(s: dict[str, Any]) -> str:
    activity = s["interactions_per_user"]
    events = ", ".join(f"{k} {v:,}" for k, v in s["events"].items())
    price = "no prices"
    if s["price_median"] is not None:
        price = (
            f"{s['price_known_share']:.0%} of items have a price (median ${s['price_median']:,.2f})"
        )
    lines = [
        f"# EDA: `{s['dataset']}`",
        "",
        f"- {s['users']:,} users, {s['items']:,} items, {s['interactions']:,} interactions "
        f"({s['distinct_user_item_pairs']:,} distinct user-item pairs, density "
        f"{s['density']:.4%})",
        f"- events: {events}",
        f"- time span: {s['first_event']} .. {s['last_event']}",
        f"- long tail: the top 1% of items get {s['top_1pct_items_share']:.0%} of interactions, "
        f"the top 10% get {s['top_10pct_items_share']:.0%} (Gini {s['item_gini']:.2f}); "
        f"{s['items_never_interacted']:,} items have none",
        f"- interactions per user: median {activity['median']:.0f}, mean {activity['mean']:.1f}, "
        f"p90 {activity['p90']:.0f}, max {activity['max']:,}",
        f"- {s['categories']} categories, {s['brands']} brands; {price}",
        "",
    ]
    lines += [f"![{name}]({name})" for name in PLOTS]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir", type=Path, help="canonical dataset folder")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("Modeling/EDA/out"),
        help="folder for the PNGs and summary.md",
    )
    args = parser.parse_args(argv)
    summary = run_eda(args.dataset_dir, args.out)
    print((args.out / "summary.md").read_text())
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
