"""``reco bench named-items``: the chat's conversational cold start (:mod:`Prod.chat_reco_engine.
named_items`) measured on MovieLens, in-process (no servers).

(a) **Matching**: ``--titles`` catalogue titles drawn at random (seeded), each turned into a name
per perturbation kind (exact, no year, lower case, a typo - one character swapped, dropped or
inserted -, a typo with the year, a partial title - the subtitle after ":" / " - " or the last
words dropped -), matched against the whole catalogue. accuracy@1 (the top title is the item,
or one with the very same title) and accepted (top title correct and confident) per kind, for
rapidfuzz alone and blended with the MiniLM title cosine; ``false_match`` is the share of
non-title phrases ("something cheap", "funny movies") that get a confident match.

(b) **Recommendations from 3 named favourites**: ``--users`` held-out users (>= 10 ratings);
ALS (the trainer's params) fitted on every other user. Each held-out user names their 3
top-rated titles (latest first among equal ratings), perturbed by a random kind; the matches are
folded in (:func:`Prod.common.als.fold_in_user`, weight 5, as "loved") and the ALS top 10 without
them is scored by nDCG@10 against the user's other items rated >= 4. Baselines: the most-rated
items (popularity), and the fold-in of the true 3 items (no matching error).

    reco bench named-items --titles 300 --users 200     (or python -m Prod.bench.named_items)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from Prod.chat_reco_engine.named_items import EMBEDDING_WEIGHT, TitleMatcher
from Prod.common.errors import InvalidInput

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATASET = ROOT.parent / "shared" / "datasets" / "movielens-latest-small"
DEFAULT_PARAMS = ROOT / "Prod" / "als_trainer" / "params" / "als_params.json"
KINDS = ("exact", "no_year", "lower", "typo", "typo_year", "partial")
LOVED_WEIGHT = 5.0  # "I loved X" = a 5-star rating
# phrases that name no title; a confident match of one is a false match
NON_TITLES = (
    "something cheap",
    "good movies",
    "funny movies",
    "romantic comedies",
    "scary horror movies",
    "action films",
    "a gift for my dad",
    "something for the weekend",
    "documentaries about nature",
    "classic westerns",
    "animated films for kids",
    "feel good stuff",
    "long epic dramas",
    "anything with explosions",
    "old black and white films",
    "sci-fi with robots",
    "wireless earbuds",
    "a good thriller",
    "french cinema",
    "movies my wife likes",
)


def _strip_year(title: str) -> str:
    return title.rsplit(" (", 1)[0] if title.rstrip().endswith(")") else title


def _typo(text: str, rng: np.random.Generator) -> str:
    """One character swapped, dropped or inserted inside a word of 4+ letters."""
    words = text.split()
    choices = [n for n, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not choices:
        return text
    n = int(rng.choice(choices))
    word, kind = words[n], int(rng.integers(3))
    i = int(rng.integers(1, len(word) - 1))
    if kind == 0:
        word = word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]
    elif kind == 1:
        word = word[:i] + word[i + 1 :]
    else:
        word = word[:i] + "abcdefghijklmnopqrstuvwxyz"[int(rng.integers(26))] + word[i:]
    words[n] = word
    return " ".join(words)


def _partial(text: str, rng: np.random.Generator) -> str | None:
    """The title without its subtitle, else without its last word(s); None if too short."""
    for sep in (": ", " - "):
        if sep in text:
            return text.split(sep, 1)[0]
    words = text.split()
    if len(words) < 3:
        return None
    keep = max(2, int(round(len(words) * 0.6)))
    return " ".join(words[:keep])


def perturb(title: str, kind: str, rng: np.random.Generator) -> str | None:
    """A name for ``title`` of one perturbation kind (None: the kind does not apply)."""
    bare = _strip_year(title)
    year = title[len(bare) :].strip()
    if kind == "exact":
        return title
    if kind == "no_year":
        return bare
    if kind == "lower":
        return bare.lower()
    if kind == "typo":
        typo = _typo(bare, rng)
        return typo if typo != bare else None
    if kind == "typo_year":
        typo = _typo(bare, rng)
        return f"{typo} {year}".strip() if typo != bare and year else None
    if kind == "partial":
        return _partial(bare, rng)
    raise InvalidInput(f"unknown perturbation kind {kind!r}")


def _load(dataset: Path):
    from Prod.datasets.importers import import_movielens

    if not dataset.is_dir():
        raise InvalidInput(
            f"{dataset} is not a folder (a MovieLens download, e.g. ml-latest-small)"
        )
    return import_movielens(dataset)


def _matchers(items: pd.DataFrame, embedder) -> tuple[TitleMatcher, float]:
    from Prod.common.embeddings import embed_texts

    started = time.perf_counter()
    matcher = TitleMatcher(
        items["item_id"].tolist(),
        items["title"].tolist(),
        popularity=items["rating_count"].fillna(0).to_numpy(),
        embed=lambda texts: embed_texts(embedder, texts),
    )
    return matcher, time.perf_counter() - started


def matching_report(
    matcher: TitleMatcher, n_titles: int, seed: int, weights: tuple[float, ...]
) -> dict:
    """(a): accuracy@1 and accepted share per kind and blend weight, and the false-match rate."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(matcher), size=min(n_titles, len(matcher)), replace=False)
    cases = []  # (kind, name, target row)
    for row in rows:
        for kind in KINDS:
            name = perturb(matcher.titles[row], kind, rng)
            if name:
                cases.append((kind, name, int(row)))
    started = time.perf_counter()
    texts = [name for _, name, _ in cases] + list(NON_TITLES)
    from Prod.chat_reco_engine.named_items import _PARENS_TAIL

    vectors = matcher.embed([_PARENS_TAIL.sub("", t).strip() or t for t in texts])
    scored = [matcher.scored(t, v) for t, v in zip(texts, vectors, strict=True)]
    per_query_ms = (time.perf_counter() - started) * 1000 / max(1, len(texts))
    report = {"titles": int(len(rows)), "queries": len(cases), "ms_per_query": per_query_ms}
    by_weight = {}
    for w in weights:
        hits: dict[str, list[tuple[bool, bool]]] = {k: [] for k in KINDS}
        for (kind, name, row), found in zip(cases, scored, strict=False):
            top = matcher.ranked(name, found, 1, weight=w)
            ok = bool(top) and matcher.titles[row] == top[0].title
            hits[kind].append((ok, ok and matcher.confident(top[0])))
        false = 0
        for text, found in zip(NON_TITLES, scored[len(cases) :], strict=True):
            top = matcher.ranked(text, found, 1, weight=w)
            false += bool(top) and matcher.confident(top[0])
        every = [h for kind in KINDS for h in hits[kind]]
        by_weight[f"{w:g}"] = {
            "kinds": {
                kind: {
                    "n": len(h),
                    "accuracy@1": float(np.mean([a for a, _ in h])) if h else None,
                    "accepted": float(np.mean([b for _, b in h])) if h else None,
                }
                for kind, h in hits.items()
            },
            "all": {
                "n": len(every),
                "accuracy@1": float(np.mean([a for a, _ in every])),
                "accepted": float(np.mean([b for _, b in every])),
            },
            "false_match": false / len(NON_TITLES),
        }
    report["by_weight"] = by_weight
    return report


def recommendation_report(
    data, matcher: TitleMatcher, n_users: int, seed: int, k: int = 10
) -> dict:
    """(b): nDCG@k of the fold-in of 3 named (perturbed, matched) favourites vs popularity."""
    import torch

    from Prod.common.als import ALSParams, fit_als, fold_in_user, gramian
    from Prod.common.evaluation import IndexMaps, to_user_items
    from Prod.common.evaluation.metrics import ndcg_at_k

    frame = data.interactions
    frame = frame.assign(rating=pd.to_numeric(frame["rating"], errors="coerce"))
    counts = frame.groupby("user_id").size()
    eligible = sorted(counts[counts >= 10].index)
    rng = np.random.default_rng(seed)
    held = set(rng.choice(eligible, size=min(n_users, len(eligible) // 2), replace=False))
    train = frame[~frame["user_id"].isin(held)]
    params = ALSParams.from_file(DEFAULT_PARAMS)
    started = time.perf_counter()
    maps = IndexMaps.from_frame(train)
    model = fit_als(to_user_items(train, maps), params, compute_loss=False)
    fit_s = time.perf_counter() - started
    y = model.item_factors
    yty = gramian(y)
    item_row = {i: n for n, i in enumerate(maps.item_ids)}
    popular = train.groupby("item_id").size().sort_values(ascending=False).index.tolist()
    title_of = dict(zip(matcher.item_ids, matcher.titles, strict=True))

    def fold_top(named: list[str]) -> list[str]:
        rows = [item_row[i] for i in named if i in item_row]
        if not rows:
            return []
        x = fold_in_user(
            y, torch.tensor(rows), torch.full((len(rows),), LOVED_WEIGHT), params, yty=yty
        )
        scores = (y @ x).numpy()
        scores[rows] = -np.inf
        top = np.argsort(-scores, kind="stable")[:k]
        return [maps.item_ids[r] for r in top]

    results = {"named": [], "oracle": [], "popularity": []}
    matched_correct, matched_any, users = 0, 0, 0
    for _user, rows in frame[frame["user_id"].isin(held)].groupby("user_id"):
        rows = rows.sort_values(["rating", "timestamp"], ascending=[False, False])
        favourites = rows["item_id"].head(3).tolist()
        relevant = set(rows[rows["rating"] >= 4]["item_id"].iloc[3:]) - set(favourites)
        if not relevant:
            continue
        users += 1
        named = []
        for item in favourites:
            kind = KINDS[int(rng.integers(len(KINDS)))]
            name = perturb(title_of.get(item, ""), kind, rng) or title_of.get(item, "")
            found = matcher.match(name)
            matched_any += found is not None
            if found is not None:
                matched_correct += found.title == title_of.get(item)
                named.append(found.item_id)
        results["named"].append(ndcg_at_k(fold_top(named), relevant, k))
        results["oracle"].append(ndcg_at_k(fold_top(favourites), relevant, k))
        baseline = [i for i in popular if i not in favourites][:k]
        results["popularity"].append(ndcg_at_k(baseline, relevant, k))
    return {
        "users": users,
        "train_users": int(train["user_id"].nunique()),
        "fit_s": round(fit_s, 2),
        f"ndcg@{k}": {name: float(np.mean(v)) if v else None for name, v in results.items()},
        "named_matched": matched_any / max(1, 3 * users),
        "named_correct": matched_correct / max(1, 3 * users),
    }


def run_named_items_bench(
    dataset: Path = DEFAULT_DATASET,
    n_titles: int = 300,
    n_users: int = 200,
    seed: int = 7,
    weights: tuple[float, ...] = (0.0, EMBEDDING_WEIGHT),
) -> dict:
    from Prod.common.embeddings import load_embedder

    started = time.perf_counter()
    data = _load(Path(dataset))
    embedder = load_embedder("")
    matcher, build_s = _matchers(data.items, embedder)
    report = {
        "dataset": str(dataset),
        "catalogue_titles": len(matcher),
        "matcher_build_s": round(build_s, 1),
        "matching": matching_report(matcher, n_titles, seed, weights),
        "recommendations": recommendation_report(data, matcher, n_users, seed)
        if n_users > 0
        else None,
    }
    report["total_s"] = round(time.perf_counter() - started, 1)
    return report


def render(report: dict, print_line=print) -> None:
    """Readable tables of a report."""
    m = report["matching"]
    print_line(
        f"named-item matching on {report['catalogue_titles']} titles "
        f"({m['titles']} drawn, {m['queries']} names, {m['ms_per_query']:.1f} ms/name; "
        f"matcher built in {report['matcher_build_s']} s)"
    )
    weights = list(m["by_weight"])
    header = f"{'kind':<10} {'n':>5} " + " ".join(
        f"{'acc@1 w=' + w:>11} {'accepted':>8}" for w in weights
    )
    print_line(header)
    for kind in [*KINDS, "all"]:
        cells = []
        n = None
        for w in weights:
            row = m["by_weight"][w]["all" if kind == "all" else "kinds"]
            row = row if kind == "all" else row[kind]
            n = row["n"]
            acc, accepted = row["accuracy@1"], row["accepted"]
            cells.append(
                f"{'-' if acc is None else f'{acc:.3f}':>11} "
                f"{'-' if accepted is None else f'{accepted:.3f}':>8}"
            )
        print_line(f"{kind:<10} {n:>5} " + " ".join(cells))
    false = ", ".join(f"w={w}: {m['by_weight'][w]['false_match']:.2f}" for w in weights)
    print_line(f"non-title phrases matched (false match): {false}")
    r = report.get("recommendations")
    if r:
        nd = next(v for key, v in r.items() if key.startswith("ndcg@"))
        print_line(
            f"\n3 named favourites -> ALS fold-in, {r['users']} held-out users "
            f"(ALS fitted on {r['train_users']} users in {r['fit_s']} s)"
        )
        for name, value in nd.items():
            print_line(f"  nDCG@10 {name:<11} {value:.4f}")
        print_line(
            f"  names matched {r['named_matched']:.3f}, to the right title {r['named_correct']:.3f}"
        )
    print_line(f"total {report['total_s']} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--titles", type=int, default=300)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run_named_items_bench(args.dataset, args.titles, args.users, args.seed)
    print(json.dumps(report, indent=2)) if args.json else render(report)


if __name__ == "__main__":
    main()
