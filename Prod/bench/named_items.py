"""``reco bench named-items``: the chat's conversational cold start (:mod:`Prod.chat_reco_engine.
named_items`) measured on MovieLens, in-process (no servers).

(a) **Matching**: ``--titles`` catalogue titles drawn at random (seeded), each turned into a name
per perturbation kind (exact, no year, lower case, a typo - one character swapped, dropped or
inserted -, a typo with the year, a partial title - the subtitle after ":" / " - " or the last
words dropped -), matched against the whole catalogue. accuracy@1 (the top title is the item,
or one with the very same title) and accepted (top title correct and confident) per kind, for
rapidfuzz alone and blended with the MiniLM title cosine; ``false_match`` is the share of
non-title phrases ("something cheap", "funny movies") that get a confident match.

(b) **Recommendations from 3 named favourites**: ``--users`` held-out test users (>= 10
ratings) name their 3 top-rated titles (latest first among equal ratings); the top 10 without
them is scored by nDCG@10 against their other items rated >= 4. ALS (the trainer's params) is
fitted on every other user. Scorings: the fold-in of the 3 items (:func:`Prod.common.als.
fold_in_user`) or the summed cosine of the item factors with theirs, each plus ``beta`` x the
log-popularity (:func:`Prod.chat_reco_engine.personalise.with_popularity`; beta 0 = none), the
fold-in with other weights / stronger regularisation, and popularity (the most-rated items).
Each scoring's parameter is picked on validation users drawn from the training users (ALS
refitted without them), never on the test users. With matching, the test users' titles are
perturbed by a random kind, matched, and scored by the chat's scoring (cosine + popularity) at
the validated beta. ``--no-matching`` skips (a) and the matcher (no MiniLM): 1-3 minutes.

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


BETAS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # popularity prior weights tried
FOLD_GRID = ((5.0, 1.0), (1.0, 1.0), (20.0, 1.0), (100.0, 1.0), (5.0, 3.0), (5.0, 10.0))
# (c): (weight of a named item, regularisation x) of the fold-in


def _fitted(train: pd.DataFrame):
    from Prod.common.als import ALSParams, fit_als
    from Prod.common.evaluation import IndexMaps, to_user_items

    params = ALSParams.from_file(DEFAULT_PARAMS)
    maps = IndexMaps.from_frame(train)
    model = fit_als(to_user_items(train, maps), params, compute_loss=False)
    counts = train.groupby("item_id").size().reindex(maps.item_ids).fillna(0).to_numpy()
    return params, maps, model.item_factors, counts


def _cases(frame: pd.DataFrame, users) -> list[tuple[list[str], set[str]]]:
    """Per user: (3 top-rated items, latest first among equal ratings; their other items >= 4)."""
    out = []
    for _user, rows in frame[frame["user_id"].isin(users)].groupby("user_id"):
        rows = rows.sort_values(["rating", "timestamp"], ascending=[False, False])
        favourites = rows["item_id"].head(3).tolist()
        relevant = set(rows[rows["rating"] >= 4]["item_id"].iloc[3:]) - set(favourites)
        if relevant:
            out.append((favourites, relevant))
    return out


class _Scorer:
    """Every scoring of (b) over one fitted model: raw scores per named set, then the blends."""

    def __init__(self, train: pd.DataFrame, k: int) -> None:
        import torch

        from Prod.common.als import gramian

        self.params, self.maps, self.y, self.counts = _fitted(train)
        self.yty = gramian(self.y)
        self.row = {i: n for n, i in enumerate(self.maps.item_ids)}
        self.k = k
        self._torch = torch

    def fold(self, rows: list[int], weight: float = LOVED_WEIGHT, reg: float = 1.0) -> np.ndarray:
        from dataclasses import replace

        from Prod.common.als import fold_in_user

        torch = self._torch
        params = replace(self.params, regularization=self.params.regularization * reg)
        x = fold_in_user(
            self.y, torch.tensor(rows), torch.full((len(rows),), weight), params, yty=self.yty
        )
        return (self.y @ x).numpy().astype(np.float64)

    def cosine(self, rows: list[int]) -> np.ndarray:
        """The product's scoring: summed cosine of the ALS item factors with the named items'."""
        from Prod.chat_reco_engine.personalise import item_cosine

        return item_cosine(self.y.numpy(), [(r, LOVED_WEIGHT) for r in rows])

    def ndcg(self, scores: np.ndarray, rows: list[int], relevant: set[str]) -> float:
        from Prod.common.evaluation.metrics import ndcg_at_k

        scores = scores.copy()
        scores[rows] = -np.inf
        top = np.argsort(-scores, kind="stable")[: self.k]
        return ndcg_at_k([self.maps.item_ids[r] for r in top], relevant, self.k)

    def variants(self, cases) -> dict[str, dict[float, float]]:
        """{variant: {param: mean nDCG@k}}: fold-in / cosine + beta * popularity, and the
        fold-in grid (c) (param: its index in FOLD_GRID), and popularity (param 0)."""
        from Prod.chat_reco_engine.personalise import with_popularity

        sums: dict[str, dict[float, list[float]]] = {
            "fold-in + popularity": {b: [] for b in BETAS},
            "cosine + popularity": {b: [] for b in BETAS},
            "fold-in weight/reg": {n: [] for n in range(len(FOLD_GRID))},
            "popularity": {0: []},
        }
        for favourites, relevant in cases:
            rows = [self.row[i] for i in favourites if i in self.row]
            if not rows:
                continue
            base = {
                "fold-in + popularity": self.fold(rows),
                "cosine + popularity": self.cosine(rows),
            }
            for name, raw in base.items():
                for b in BETAS:
                    sums[name][b].append(
                        self.ndcg(with_popularity(raw, self.counts, b), rows, relevant)
                    )
            for n, (weight, reg) in enumerate(FOLD_GRID):
                sums["fold-in weight/reg"][n].append(
                    self.ndcg(self.fold(rows, weight, reg), rows, relevant)
                )
            sums["popularity"][0].append(self.ndcg(self.counts.astype(np.float64), rows, relevant))
        return {
            v: {p: float(np.mean(x)) if x else 0.0 for p, x in d.items()} for v, d in sums.items()
        }


def _param_label(variant: str, param: float) -> str:
    if variant == "fold-in weight/reg":
        weight, reg = FOLD_GRID[int(param)]
        return f"w={weight:g} reg x{reg:g}"
    return "-" if variant == "popularity" else f"beta={param:g}"


def recommendation_report(
    data, matcher: TitleMatcher | None, n_users: int, seed: int, k: int = 10
) -> dict:
    """(b): nDCG@k from 3 favourites: each scoring's parameter picked on validation users (drawn
    from the training users, ALS refitted without them), then reported on the held-out test
    users; with a matcher, also from the 3 names perturbed and matched (scored by the product's
    blend at the validated beta)."""
    from Prod.chat_reco_engine.personalise import with_popularity

    frame = data.interactions
    frame = frame.assign(rating=pd.to_numeric(frame["rating"], errors="coerce"))
    counts = frame.groupby("user_id").size()
    eligible = sorted(counts[counts >= 10].index)
    rng = np.random.default_rng(seed)
    held = set(rng.choice(eligible, size=min(n_users, len(eligible) // 2), replace=False))
    train = frame[~frame["user_id"].isin(held)]
    rest = sorted(set(eligible) - held)
    val_rng = np.random.default_rng(seed + 1)
    validation = set(val_rng.choice(rest, size=min(n_users, len(rest) // 3), replace=False))
    started = time.perf_counter()
    val_scorer = _Scorer(train[~train["user_id"].isin(validation)], k)
    val_cases = _cases(frame, validation)
    val = val_scorer.variants(val_cases)
    scorer = _Scorer(train, k)
    fit_s = time.perf_counter() - started
    test_cases = _cases(frame, held)
    test = scorer.variants(test_cases)
    table = {}
    for variant, by_param in val.items():
        best = max(by_param, key=lambda p: (by_param[p], -p))
        table[variant] = {
            "picked": _param_label(variant, best),
            "validation": by_param[best],
            "test": test[variant][best],
            "test_at_0": test[variant][0],  # beta 0 (plain fold-in / cosine), w=5 reg x1
        }
    product = "cosine + popularity"  # the chat's scoring (named_items._als_ranking)
    beta = max(val[product], key=lambda p: (val[product][p], -p))
    report = {
        "users": len(test_cases),
        "validation_users": len(val_cases),
        "train_users": int(train["user_id"].nunique()),
        "fit_s": round(fit_s, 2),
        "k": k,
        "variants": table,
        "validation_grid": {v: {f"{p:g}": x for p, x in d.items()} for v, d in val.items()},
    }
    if matcher is None:
        return report
    title_of = dict(zip(matcher.item_ids, matcher.titles, strict=True))
    named_scores, matched_correct, matched_any = [], 0, 0
    for favourites, relevant in test_cases:
        named = []
        for item in favourites:
            kind = KINDS[int(rng.integers(len(KINDS)))]
            name = perturb(title_of.get(item, ""), kind, rng) or title_of.get(item, "")
            found = matcher.match(name)
            matched_any += found is not None
            if found is not None:
                matched_correct += found.title == title_of.get(item)
                named.append(found.item_id)
        rows = [scorer.row[i] for i in named if i in scorer.row]
        if not rows:
            named_scores.append(0.0)
            continue
        blended = with_popularity(scorer.cosine(rows), scorer.counts, beta)
        named_scores.append(scorer.ndcg(blended, rows, relevant))
    report["named"] = {
        "beta": beta,
        f"ndcg@{k}": float(np.mean(named_scores)) if named_scores else None,
        "matched": matched_any / max(1, 3 * len(test_cases)),
        "correct": matched_correct / max(1, 3 * len(test_cases)),
    }
    return report


def run_named_items_bench(
    dataset: Path = DEFAULT_DATASET,
    n_titles: int = 300,
    n_users: int = 200,
    seed: int = 7,
    weights: tuple[float, ...] = (0.0, EMBEDDING_WEIGHT),
    matching: bool = True,
) -> dict:
    """``matching=False``: (b) only, from the true 3 items (no embedder, no matcher)."""
    started = time.perf_counter()
    data = _load(Path(dataset))
    report: dict = {"dataset": str(dataset), "matching": None}
    matcher = None
    if matching:
        from Prod.common.embeddings import load_embedder

        matcher, build_s = _matchers(data.items, load_embedder(""))
        report["catalogue_titles"] = len(matcher)
        report["matcher_build_s"] = round(build_s, 1)
        report["matching"] = matching_report(matcher, n_titles, seed, weights)
    report["recommendations"] = (
        recommendation_report(data, matcher, n_users, seed) if n_users > 0 else None
    )
    report["total_s"] = round(time.perf_counter() - started, 1)
    return report


def render(report: dict, print_line=print) -> None:
    """Readable tables of a report."""
    if report["matching"] is not None:
        _render_matching(report, print_line)
    r = report.get("recommendations")
    if r:
        _render_recommendations(r, print_line)
    print_line(f"total {report['total_s']} s")


def _render_matching(report: dict, print_line) -> None:
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


def _render_recommendations(r: dict, print_line) -> None:
    print_line(
        f"\n3 favourites -> top {r['k']}, nDCG@{r['k']}: {r['users']} held-out test users, "
        f"parameters picked on {r['validation_users']} validation users "
        f"(ALS fitted on {r['train_users']} users, twice, in {r['fit_s']} s)"
    )
    print_line(f"{'scoring':<22} {'picked':<16} {'valid':>7} {'test':>7} {'test@0':>7}")
    for name, row in r["variants"].items():
        print_line(
            f"{name:<22} {row['picked']:<16} {row['validation']:>7.4f} {row['test']:>7.4f} "
            f"{row['test_at_0']:>7.4f}"
        )
    print_line("test@0: beta 0 (no popularity prior) / w=5 reg x1")
    named = r.get("named")
    if named:
        print_line(
            f"named (perturbed, matched) -> cosine + popularity beta={named['beta']:g}: "
            f"{named['ndcg@' + str(r['k'])]:.4f}; names matched {named['matched']:.3f}, "
            f"to the right title {named['correct']:.3f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--titles", type=int, default=300)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--no-matching", action="store_true", help="(b) from the true 3 items only (seconds)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run_named_items_bench(
        args.dataset, args.titles, args.users, args.seed, matching=not args.no_matching
    )
    print(json.dumps(report, indent=2)) if args.json else render(report)


if __name__ == "__main__":
    main()
