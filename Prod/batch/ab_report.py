"""``reco report ab``: what happened after the recommendations of each arm of an A/B test.

For each response served in the period (``recommendation_log``), the user's interactions with
one of its recommended items within ``window`` after it was served (``interaction.occurred_at``)
are looked up in one Postgres query. The unit is the user, the unit of randomisation (a user's
responses are not independent trials): per arm, the share of served users who clicked
(``click``, ``add_to_cart`` or ``purchase``) or purchased a recommended item, with a Wilson
score interval, and the difference B - A with Newcombe's interval built from the two Wilson
intervals (Newcombe 1998, method 10). Response-level rates are shown too, without interval.

Arms are the experiment's assignment (:func:`Prod.common.experiment.arm_of`, intention to
treat); a response whose served version is not its arm's (B not loaded yet, say) still counts in
its arm and is counted in ``other_version_responses``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from statistics import NormalDist
from typing import Any

from sqlalchemy import Engine, text

from Prod.common.errors import InvalidInput
from Prod.common.experiment import ARM_A, ARM_B, Experiment, arm_of

CLICK_EVENTS = ("click", "add_to_cart", "purchase")
PURCHASE_EVENT = "purchase"
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}

_OUTCOMES_SQL = text(
    """
    SELECT r.user_id, r.model_version,
           coalesce(bool_or(i.event = ANY(:clicks)), false) AS clicked,
           coalesce(bool_or(i.event = :purchase), false) AS purchased
    FROM recommendation_log r
    LEFT JOIN interaction i
      ON i.user_id = r.user_id
     AND r.item_ids ? i.item_id
     AND i.occurred_at > r.served_at
     AND i.occurred_at <= r.served_at + make_interval(secs => :window_s)
    WHERE r.served_at >= :since AND r.served_at < :until
    GROUP BY r.id, r.user_id, r.model_version
    """
)


def parse_time(value: str, *, now: datetime, name: str) -> datetime:
    """ISO-8601 (naive = UTC) or a duration back from now (``90m``, ``24h``, ``7d``)."""
    match = _RELATIVE.match(value.strip())
    if match:
        return now - timedelta(seconds=int(match[1]) * _UNIT_S[match[2]])
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(
            f"{name} {value!r} is neither an ISO-8601 time nor a duration such as 24h or 7d"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def parse_window(value: str) -> timedelta:
    match = _RELATIVE.match(value.strip())
    if not match or int(match[1]) == 0:
        raise InvalidInput(f"--window {value!r} must be a positive duration such as 30m, 24h, 7d")
    return timedelta(seconds=int(match[1]) * _UNIT_S[match[2]])


def wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion (Wilson 1927); (0, 1) when ``n`` is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(a: tuple[int, int], b: tuple[int, int], z: float) -> tuple[float, float, float]:
    """Difference of proportions b - a (each (successes, n)) with Newcombe's hybrid score
    interval: (difference, low, high)."""
    pa, pb = a[0] / a[1], b[0] / b[1]
    la, ua = wilson(*a, z)
    lb, ub = wilson(*b, z)
    diff = pb - pa
    low = diff - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)
    high = diff + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)
    return diff, low, high


def ab_report(
    db: Engine,
    experiment: Experiment,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    window: timedelta = timedelta(hours=24),
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The comparison of the two arms of ``experiment`` over responses served in
    [since, until) (default: the experiment's run)."""
    if not 0.5 <= confidence < 1.0:
        raise InvalidInput(f"--confidence must be in [0.5, 1) (got {confidence})")
    since = since or datetime.fromisoformat(experiment.started_at)
    until = until or (
        datetime.fromisoformat(experiment.stopped_at)
        if experiment.stopped_at
        else datetime.now(timezone.utc)
    )
    if since >= until:
        raise InvalidInput(f"--since ({since.isoformat()}) is not before --until")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    with db.connect() as conn:
        rows = conn.execute(
            _OUTCOMES_SQL,
            {
                "clicks": list(CLICK_EVENTS),
                "purchase": PURCHASE_EVENT,
                "window_s": window.total_seconds(),
                "since": since,
                "until": until,
            },
        ).all()
    arms = {name: _Arm() for name in (ARM_A, ARM_B)}
    arm_version = {ARM_B: experiment.version_b}
    for user_id, version, clicked, purchased in rows:
        arm = arms[arm_of(experiment, user_id)]
        arm.add(user_id, version, clicked, purchased)
    summary = {
        "experiment_id": experiment.experiment_id,
        "version_b": experiment.version_b,
        "share_b": experiment.share_b,
        "running": experiment.running,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "window_s": int(window.total_seconds()),
        "confidence": confidence,
        "unit": "user",
        "arms": {
            name: arm.summary(z, arm_version.get(name), experiment.version_b)
            for name, arm in arms.items()
        },
    }
    summary["b_minus_a"] = {
        metric: _difference(arms[ARM_A], arms[ARM_B], metric, z)
        for metric in ("click_rate", "purchase_rate")
    }
    return summary


class _Arm:
    def __init__(self) -> None:
        self.users: dict[str, list[bool]] = {}  # user -> [clicked, purchased] over responses
        self.responses = 0
        self.clicked_responses = 0
        self.purchased_responses = 0
        self.versions: Counter = Counter()
        self.other_version = 0

    def add(self, user_id: str, version: str | None, clicked: bool, purchased: bool) -> None:
        outcome = self.users.setdefault(user_id, [False, False])
        outcome[0] |= clicked
        outcome[1] |= purchased
        self.responses += 1
        self.clicked_responses += clicked
        self.purchased_responses += purchased
        self.versions[str(version)] += 1

    def count(self, metric: str) -> tuple[int, int]:
        column = 0 if metric == "click_rate" else 1
        return sum(o[column] for o in self.users.values()), len(self.users)

    def summary(self, z: float, version: str | None, version_b: str) -> dict[str, Any]:
        out: dict[str, Any] = {"users": len(self.users), "responses": self.responses}
        for metric in ("click_rate", "purchase_rate"):
            successes, n = self.count(metric)
            low, high = wilson(successes, n, z)
            out[metric] = {
                "users": successes,
                "rate": round(successes / n, 6) if n else None,
                "ci": [round(low, 6), round(high, 6)],
            }
        out["response_click_rate"] = (
            round(self.clicked_responses / self.responses, 6) if self.responses else None
        )
        out["response_purchase_rate"] = (
            round(self.purchased_responses / self.responses, 6) if self.responses else None
        )
        out["served_versions"] = dict(self.versions)
        # arm B should be served by version_b, arm A by anything else (the active version)
        out["other_version_responses"] = sum(
            n for v, n in self.versions.items() if (v == version_b) != (version == version_b)
        )
        return out


def _difference(a: _Arm, b: _Arm, metric: str, z: float) -> dict[str, Any]:
    counts_a, counts_b = a.count(metric), b.count(metric)
    if counts_a[1] == 0 or counts_b[1] == 0:
        return {"difference": None, "ci": None, "significant": None}
    diff, low, high = newcombe(counts_a, counts_b, z)
    return {
        "difference": round(diff, 6),
        "ci": [round(low, 6), round(high, 6)],
        "significant": low > 0 or high < 0,
    }
