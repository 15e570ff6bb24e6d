"""Small statistics for comparing answers on the same questions. Pure; standard library only."""

from __future__ import annotations

import math
from typing import Mapping


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion k/n (sound at 0 and n, unlike Wald).

    >>> [round(x, 4) for x in wilson_interval(0, 10)]
    [0.0, 0.2775]
    """
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n and n > 0 (got k={k}, n={n})")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value for paired right/wrong outcomes (same questions, two ways).

    ``gained``: questions wrong under A and right under B; ``lost``: right under A, wrong under B.
    Under "no difference" each discordant question is a fair coin, so p = P(Binomial(n, 1/2) as
    far from n/2 as observed), n = gained + lost (1.0 when no question is discordant).

    >>> mcnemar_exact(3, 0)
    0.25
    """
    if gained < 0 or lost < 0:
        raise ValueError(f"mcnemar_exact needs counts >= 0 (got gained={gained}, lost={lost})")
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired(a: Mapping[str, bool], b: Mapping[str, bool]) -> dict[str, float | int]:
    """B against A on the questions both answered: gained / lost counts and McNemar's p.

    >>> paired({"q1": False, "q2": True, "q3": True}, {"q1": True, "q2": True, "q4": False})
    {'n': 2, 'gained': 1, 'lost': 0, 'p': 1.0}
    """
    common = sorted(set(a) & set(b))
    gained = sum(1 for q in common if b[q] and not a[q])
    lost = sum(1 for q in common if a[q] and not b[q])
    return {"n": len(common), "gained": gained, "lost": lost, "p": mcnemar_exact(gained, lost)}
