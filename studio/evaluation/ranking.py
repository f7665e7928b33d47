"""Rankings from votes: Bradley-Terry strengths with bootstrap intervals, and mean scores with intervals.

A battle is ``(i, j, result)``: variant ``i`` shown against ``j``, ``result`` 1 when ``i`` won, 0 when ``j``
won, 0.5 for a tie (and for "both bad": neither is better). Bradley-Terry says ``P(i beats j) = σ(θ_i − θ_j)``;
the strengths θ are fitted by maximum likelihood with ties counted as half a win each way (Hunter's 2004 MM
iteration). A prior of ``PRIOR`` virtual wins each way between every two variants keeps every strength finite
(one win alone gives a ``ln 3`` lead, not an infinite one) and pulls thin evidence towards "equal". Strengths
are natural-log odds, centred on their mean. Intervals come from resampling the battles with replacement
(seeded, so a board reads the same twice).

numpy and scipy only, imported here: this module is cheap next to the model stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PRIOR = 0.5
ROUNDS = 200
LEVEL = 0.95


@dataclass
class Battles:
    """Battles as index arrays over ``names`` (the players)."""
    names: list[str]
    first: np.ndarray   # int, the player shown as i
    second: np.ndarray  # int, j
    result: np.ndarray  # float: 1 i won, 0 j won, 0.5 tie

    @classmethod
    def of(cls, names: list[str], rows: list[tuple[str, str, float]]) -> "Battles":
        index = {name: k for k, name in enumerate(names)}
        first = np.array([index[a] for a, _b, _r in rows], dtype=int)
        second = np.array([index[b] for _a, b, _r in rows], dtype=int)
        result = np.array([r for _a, _b, r in rows], dtype=float)
        return cls(list(names), first, second, result)

    def __len__(self) -> int:
        return len(self.result)

    def wins(self, take: np.ndarray | None = None) -> np.ndarray:
        """``W[i, j]``: wins of i over j (ties half each way), over the battles ``take`` (indices; all if None)."""
        first, second, result = (self.first, self.second, self.result) if take is None else \
            (self.first[take], self.second[take], self.result[take])
        k = len(self.names)
        won = np.zeros((k, k))
        np.add.at(won, (first, second), result)
        np.add.at(won, (second, first), 1.0 - result)
        return won


def fit(wins: np.ndarray, prior: float = PRIOR, tol: float = 1e-10, max_iter: int = 20_000) -> np.ndarray:
    """Bradley-Terry log-strengths (mean 0) maximising the likelihood of ``wins`` plus ``prior`` virtual wins each
    way between every two players."""
    k = wins.shape[0]
    if k == 0:
        return np.zeros(0)
    w = wins + prior * (1.0 - np.eye(k))
    n = w + w.T
    total = w.sum(axis=1)
    pi = np.ones(k)
    for _ in range(max_iter):
        denominator = (n / (pi[:, None] + pi[None, :])).sum(axis=1)
        new = np.where(denominator > 0, total / np.where(denominator > 0, denominator, 1.0), pi)
        new = np.where(new > 0, new, 1e-300)
        new /= math.exp(np.log(new).mean())
        if np.max(np.abs(np.log(new) - np.log(pi))) < tol:
            pi = new
            break
        pi = new
    theta = np.log(pi)
    return theta - theta.mean()


def covariance(theta: np.ndarray, wins: np.ndarray, prior: float = PRIOR) -> np.ndarray:
    """The (pseudo-inverse) Fisher information of the strengths: ``d^T C d`` is the variance of ``d·θ``."""
    k = len(theta)
    n = wins + wins.T + 2 * prior * (1.0 - np.eye(k))
    p = 1.0 / (1.0 + np.exp(-(theta[:, None] - theta[None, :])))
    weight = n * p * (1 - p)
    information = np.diag(weight.sum(axis=1)) - weight
    return np.linalg.pinv(information)


def bootstrap(battles: Battles, rounds: int = ROUNDS, seed: int = 0, prior: float = PRIOR) -> np.ndarray:
    """Strengths refitted on ``rounds`` resamples of the battles (rows: rounds, columns: players)."""
    rng = np.random.default_rng(seed)
    count = len(battles)
    fits = np.empty((rounds, len(battles.names)))
    for r in range(rounds):
        take = rng.integers(0, count, size=count) if count else np.zeros(0, dtype=int)
        fits[r] = fit(battles.wins(take), prior)
    return fits


def interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def rank(battles: Battles, rounds: int = ROUNDS, seed: int = 0, prior: float = PRIOR) -> dict:
    """Strength, interval and counts per player, sorted by the interval's lower bound (then strength); players
    without any battle come last with no strength. Also the win-rate and vote-count matrices (in that order)
    and the bootstrap fits (``fits``, for comparisons between players)."""
    names = battles.names
    k = len(names)
    played = np.zeros(k, dtype=int)
    np.add.at(played, battles.first, 1)
    np.add.at(played, battles.second, 1)
    active = [i for i in range(k) if played[i] > 0]
    theta = np.full(k, np.nan)
    fits = np.full((rounds, k), np.nan)
    if active:
        # Only players with battles are fitted: a player without any would sit at the prior's "equal" with an
        # interval of zero width, which reads as certainty.
        remap = {old: new for new, old in enumerate(active)}
        sub = Battles([names[i] for i in active], np.array([remap[i] for i in battles.first], dtype=int),
                      np.array([remap[i] for i in battles.second], dtype=int), battles.result)
        theta[active] = fit(sub.wins(), prior)
        fits[:, active] = bootstrap(sub, rounds, seed, prior)
    won = battles.wins()
    games = np.zeros((k, k), dtype=int)
    np.add.at(games, (battles.first, battles.second), 1)
    games = games + games.T
    ties = np.zeros(k)
    decisive = np.isin(battles.result, (0.0, 1.0))
    for i, j, r, d in zip(battles.first, battles.second, battles.result, decisive):
        if not d:
            ties[i] += 1
            ties[j] += 1
    rows = []
    for i, name in enumerate(names):
        wins_i = float(won[i].sum() - 0.5 * ties[i])
        row = {"variant": name, "strength": None, "ci_low": None, "ci_high": None,
               "wins": int(round(wins_i)), "losses": int(played[i] - round(wins_i) - ties[i]), "ties": int(ties[i]),
               "votes": int(played[i]), "win_rate": float(won[i].sum() / played[i]) if played[i] else None}
        if played[i]:
            low, high = interval(fits[:, i])
            row.update(strength=float(theta[i]), ci_low=low, ci_high=high)
        rows.append(row)
    order = sorted(range(k), key=lambda i: (rows[i]["ci_low"] is None,
                                            -(rows[i]["ci_low"] or 0.0), -(rows[i]["strength"] or 0.0), i))
    rate = [[float(won[i, j] / games[i, j]) if games[i, j] else None for j in order] for i in order]
    return {"variants": [rows[i] for i in order], "order": [names[i] for i in order],
            "matrices": {"variants": [names[i] for i in order], "win_rate": rate,
                         "votes": [[int(games[i, j]) for j in order] for i in order]},
            "theta": {names[i]: (None if math.isnan(theta[i]) else float(theta[i])) for i in range(k)},
            "fits": {names[i]: fits[:, i] for i in range(k)}}


def compare(fits: dict[str, np.ndarray], better: str, worse: str, level: float = LEVEL) -> dict | None:
    """How sure the bootstrap is that ``better`` is stronger than ``worse``: the difference's interval and the share
    of rounds where it is positive; ``significant`` when the whole interval is above zero."""
    a, b = fits.get(better), fits.get(worse)
    if a is None or b is None or np.isnan(a).any() or np.isnan(b).any():
        return None
    difference = a - b
    low, high = interval(difference, level)
    return {"difference": float(np.median(difference)), "ci_low": low, "ci_high": high,
            "prob_better": float((difference > 0).mean()), "significant": bool(low > 0)}


def head_to_head(battles: Battles, a: str, b: str) -> dict:
    """Direct battles of ``a`` against ``b``: wins, losses, ties and a one-sided sign test (ties left out) of "a is
    preferred"."""
    from scipy.stats import binomtest

    ia, ib = battles.names.index(a), battles.names.index(b)
    wins = losses = ties = 0
    for i, j, r in zip(battles.first, battles.second, battles.result):
        if {int(i), int(j)} != {ia, ib}:
            continue
        score = r if i == ia else 1 - r
        if score == 1:
            wins += 1
        elif score == 0:
            losses += 1
        else:
            ties += 1
    p_value = float(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue) if wins + losses else None
    return {"wins": wins, "losses": losses, "ties": ties, "p_value": p_value}


def pair_uncertainty(battles: Battles, prior: float = PRIOR) -> dict[tuple[str, str], float]:
    """The standard error of θ_i − θ_j for every two players (from the Fisher information of the current fit):
    wide where a comparison is thin or a player under-exposed. Cheap enough to run before every assignment."""
    names = battles.names
    wins = battles.wins()
    theta = fit(wins, prior)
    cov = covariance(theta, wins, prior)
    found = {}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            variance = cov[i, i] + cov[j, j] - 2 * cov[i, j]
            found[(names[i], names[j])] = found[(names[j], names[i])] = float(math.sqrt(max(variance, 0.0)))
    return found


def mean_interval(values: list[float], level: float = LEVEL) -> dict:
    """Mean with a Student-t interval (the usual MOS interval); no interval for fewer than two values."""
    from scipy.stats import t

    n = len(values)
    if not n:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = float(np.mean(values))
    if n < 2:
        return {"mean": mean, "ci_low": None, "ci_high": None, "n": n}
    half = float(t.ppf(0.5 + level / 2, n - 1) * np.std(values, ddof=1) / math.sqrt(n))
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n}
