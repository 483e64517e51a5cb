"""Atari game suites for sweeps (``fastdqn sweep --games atari5``) and the summary score each
defines: Atari-5 and Atari-10 estimate the 57-game median human-normalised score from their
games alone; Atari-57 has the median itself.

Source: Aitchison, Sweetser & Hutter 2023, "Atari-5: Distilling the Arcade Learning
Environment down to Five Games" (ICML 2023, PMLR 202:421-438; arXiv:2210.02019), and the code
and data it points to, github.com/maitchison/Atari-5 (commit 118cad5, ``atari5.py``,
``dataset.csv``). The estimate is a linear regression in log space with no intercept
(``USE_INTERCEPT = False`` there), on per-cent human-normalised scores clipped at 0:

    log10(1 + median57) = sum over the suite's games g of  w_g * log10(1 + max(0, score_g))

fit by least squares to the published results of the algorithms with at least 40 of the 57
games and a median above 40%. The weights below are those the first author's scorer uses
(github.com/maitchison/PPO, ``tools/plot_util.py``, ``AtariScoreNormalizer.SUBSETS``); a
least-squares refit of the paper's ``dataset.csv`` gives the same numbers to 1e-9
(``tests/test_atari_suites.py`` does that refit). The paper reports Atari-5 estimates within
10% of the true median. It was fit on full-length published runs (mostly 200M frames): a short
run that plays near the random agent lies outside the range it was fit on.

All 57 games are EnvPool tasks ``<Game>-v5``; scores are normalised with the reference table
of ``atari_scores`` (Badia et al. 2020), whose rounding moves the paper's own estimates by
under 0.2%.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from fastdqn.errors import ConfigError
from fastdqn.tools.atari_scores import REFERENCE_SCORES

ENV_VERSION = "v5"

# game: weight, in the order of the paper's code.
MEDIAN_WEIGHTS: dict[str, dict[str, float]] = {
    "atari5": {
        "BattleZone": 0.3819751237831753,
        "DoubleDunk": 0.0679099488887574,
        "NameThisGame": 0.310804148620847,
        "Phoenix": 0.12412619402774641,
        "Qbert": 0.08048518286466755,
    },
    # Atari-5 and the five games that add the most to it.
    "atari10": {
        "Amidar": 0.08246357439570691,
        "Bowling": 0.0559032813915904,
        "Frostbite": 0.06912572845204429,
        "KungFuMaster": 0.09861731598935165,
        "Riverraid": 0.048594292965417056,
        "BattleZone": 0.18882008828001498,
        "DoubleDunk": 0.08519154019954558,
        "NameThisGame": 0.12869695652405946,
        "Phoenix": 0.16432707026384483,
        "Qbert": 0.05922863791062832,
    },
}

SUITES: dict[str, tuple[str, ...]] = {
    "atari5": tuple(MEDIAN_WEIGHTS["atari5"]),
    "atari10": tuple(MEDIAN_WEIGHTS["atari10"]),
    "atari57": tuple(REFERENCE_SCORES),
}

LABELS = {"atari5": "Atari-5", "atari10": "Atari-10", "atari57": "Atari-57"}


def suite_env_ids(flag: str, name: str) -> tuple[str, ...]:
    """The EnvPool task ids of suite ``name``; ConfigError naming ``flag`` if there is no such suite."""
    if name not in SUITES:
        raise ConfigError(f"{flag}: expected one of {', '.join(SUITES)} (Aitchison et al. 2023's game "
                          f"suites), got {name!r}")
    return tuple(f"{game}-{ENV_VERSION}" for game in SUITES[name])


def estimate_median(suite: str, normalized: Mapping[str, float]) -> float:
    """The suite's estimate of the 57-game median human-normalised score (1.0 = human).

    ``normalized`` maps each of the suite's games (``BattleZone``, ...) to its human-normalised
    score as a fraction, like ``atari_scores.human_normalized``; other games are ignored.
    """
    weights = MEDIAN_WEIGHTS[suite]
    missing = [g for g in weights if g not in normalized]
    if missing:
        raise ConfigError(f"estimate_median: {LABELS[suite]} needs a score for {', '.join(missing)}")
    # The paper works in per cent: 100 is human.
    log_median = sum(w * math.log10(1.0 + max(0.0, 100.0 * float(normalized[g]))) for g, w in weights.items())
    return (10.0 ** log_median - 1.0) / 100.0


def summary_suite(games) -> str | None:
    """The largest suite whose games are all among ``games``: its summary is the one to show."""
    have = set(games)
    for name in ("atari57", "atari10", "atari5"):
        if have.issuperset(SUITES[name]):
            return name
    return None
