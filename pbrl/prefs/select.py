"""Segment sampling and query selection (issue 3, item 2), shared by offline labeling and
the online track.

Boundary rule (docs/oracles.md): a segment of length ``L`` is a window of ``L`` consecutive
steps of ONE episode, ``0 <= start <= episode_length - L``. Every such window of the eligible
episodes is equally likely (episodes contribute in proportion to their number of windows);
episodes shorter than ``L`` are never used. B-Pref instead draws an episode uniformly and then
a start in ``[0, T - L - 1]`` (its last possible start is never drawn); we keep every window.

Selectors pick ``n_queries`` pairs out of a candidate pool of ``pool_factor * n_queries``
uniformly sampled pairs (B-Pref, ``reward_model.py``):

- ``uniform``: the pairs are sampled directly (no pool).
- ``disagreement``: largest population std over ensemble members of P_k[b > a].
- ``entropy``: largest mean over members of the binary entropy of P_k[b > a]
  (B-Pref's ``|p log p + (1 - p) log(1 - p)|`` averaged over members).
- ``kcenter``: greedy farthest-first traversal on segment-pair features (the flattened
  observations of both segments, actions dropped, as B-Pref), starting from the already
  labelled pairs. Features are projected to ``KCENTER_DIM`` dimensions with a fixed Gaussian
  random projection (Johnson-Lindenstrauss) so that pools of tens of thousands stay cheap.
- ``kcenter_disagreement`` / ``kcenter_entropy``: keep the top half of the pool by the
  ensemble score, then k-center down to ``n_queries`` (B-Pref feed types 4 and 5).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from pbrl.datasets.base import OfflineDataset, sample_segments
from pbrl.errors import PbrlError

SELECTORS = (
    "uniform",
    "disagreement",
    "entropy",
    "kcenter",
    "kcenter_disagreement",
    "kcenter_entropy",
)
# Selectors that rank candidates with a reward-model ensemble.
ENSEMBLE_SELECTORS = ("disagreement", "entropy", "kcenter_disagreement", "kcenter_entropy")
# Dimension of the random projection used by k-center (see the module docstring).
KCENTER_DIM = 128
# Pairs per call to the ensemble, to bound memory on large pools.
_ENSEMBLE_CHUNK = 2048


@runtime_checkable
class RewardEnsemble(Protocol):
    """Anything that predicts segment returns with several reward models.

    ``predict_segments(obs (N, L, D), act (N, L, A)) -> (M, N)``: the predicted return
    (sum over the L steps) of each of the N segments under each of the M members.
    """

    def predict_segments(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray: ...


def _gather(ds: OfflineDataset, refs: np.ndarray, field: np.ndarray) -> np.ndarray:
    rows, _ = ds.segment_index(refs)  # candidate pools hold segments of one length
    return field[rows]


def _ensemble_probs(
    ds: OfflineDataset,
    refs_a: np.ndarray,
    refs_b: np.ndarray,
    ensemble: RewardEnsemble,
) -> np.ndarray:
    """``(M, N)`` P_k[b > a] = sigmoid(S_b - S_a) per member, in chunks of pairs."""
    out = []
    for lo in range(0, refs_a.shape[0], _ENSEMBLE_CHUNK):
        ra, rb = refs_a[lo : lo + _ENSEMBLE_CHUNK], refs_b[lo : lo + _ENSEMBLE_CHUNK]
        obs = np.concatenate([_gather(ds, ra, ds.observations), _gather(ds, rb, ds.observations)])
        act = np.concatenate([_gather(ds, ra, ds.actions), _gather(ds, rb, ds.actions)])
        ret = np.asarray(ensemble.predict_segments(obs, act), dtype=np.float64)
        if ret.ndim != 2 or ret.shape[1] != obs.shape[0]:
            raise PbrlError(
                f"ensemble.predict_segments returned shape {ret.shape}, expected (M, {obs.shape[0]})"
            )
        m = ra.shape[0]
        diff = ret[:, m:] - ret[:, :m]
        out.append(0.5 * (1.0 + np.tanh(0.5 * diff)))
    return np.concatenate(out, axis=1)


def disagreement_scores(probs: np.ndarray) -> np.ndarray:
    """Population std over members (axis 0) of P_k[b > a]; ``probs`` is ``(M, N)``."""
    return np.asarray(probs, dtype=np.float64).std(axis=0)


def entropy_scores(probs: np.ndarray) -> np.ndarray:
    """Mean over members of the binary entropy (nats) of P_k[b > a]; ``probs`` is ``(M, N)``."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0 - 1e-12)
    return -(p * np.log(p) + (1.0 - p) * np.log1p(-p)).mean(axis=0)


def _pair_features(
    ds: OfflineDataset, refs_a: np.ndarray, refs_b: np.ndarray, proj: np.ndarray
) -> np.ndarray:
    """Flattened observations of both segments, randomly projected to ``proj.shape[1]``."""
    out = np.empty((refs_a.shape[0], proj.shape[1]), dtype=np.float64)
    for lo in range(0, refs_a.shape[0], _ENSEMBLE_CHUNK):
        sl = slice(lo, lo + _ENSEMBLE_CHUNK)
        fa = _gather(ds, refs_a[sl], ds.observations).reshape(len(refs_a[sl]), -1)
        fb = _gather(ds, refs_b[sl], ds.observations).reshape(len(refs_b[sl]), -1)
        # float32 product: the projection dominates k-center's cost; selection is insensitive
        out[sl] = np.concatenate([fa, fb], axis=1).astype(np.float32) @ proj
    return out


def kcenter_greedy(
    features: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    centers: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of ``k`` rows of ``features`` chosen by greedy farthest-first traversal.

    The distance of a candidate is to its nearest point among ``centers`` (already
    labelled pairs) and the rows chosen so far. Without centers the first row is drawn
    uniformly with ``rng``.
    """
    n = features.shape[0]
    k = min(k, n)
    chosen = np.empty(k, dtype=np.int64)
    if k == 0:
        return chosen
    sq = np.einsum("ij,ij->i", features, features)
    if centers is not None and len(centers):
        mind = np.full(n, np.inf)
        csq = np.einsum("ij,ij->i", centers, centers)
        for lo in range(0, centers.shape[0], 1024):
            d = sq[:, None] + csq[None, lo : lo + 1024] - 2.0 * features @ centers[lo : lo + 1024].T
            mind = np.minimum(mind, d.min(axis=1))
        start = 0
    else:
        first = int(rng.integers(n))
        chosen[0] = first
        mind = sq + sq[first] - 2.0 * np.einsum("ij,j->i", features, features[first])
        mind[first] = -np.inf
        start = 1
    for i in range(start, k):
        nxt = int(np.argmax(mind))
        chosen[i] = nxt
        # einsum, not BLAS: a threaded gemv is ~8x slower on a busy machine for these sizes
        mind = np.minimum(mind, sq + sq[nxt] - 2.0 * np.einsum("ij,j->i", features, features[nxt]))
        mind[nxt] = -np.inf
    return chosen


def check_selector(selector: str, *, has_ensemble: bool = False) -> str:
    """A known selector, and one that can run: ensemble selectors need a reward model."""
    if selector not in SELECTORS:
        raise PbrlError(
            f"unknown query selector '{selector}'; choose one of {', '.join(SELECTORS)}"
        )
    if selector in ENSEMBLE_SELECTORS and not has_ensemble:
        raise PbrlError(
            f"query selector '{selector}' ranks candidates with a reward-model ensemble, but none "
            f"was given (use selector 'uniform' or 'kcenter', or pass an ensemble)"
        )
    return selector


def select_queries(
    ds: OfflineDataset,
    n_queries: int,
    length: int,
    rng: np.random.Generator,
    *,
    selector: str = "uniform",
    ensemble: RewardEnsemble | None = None,
    pool_factor: int = 10,
    episodes: np.ndarray | None = None,
    labelled: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose ``n_queries`` segment pairs: ``(refs_a, refs_b)``, each ``(n_queries, 3)``.

    ``labelled`` (refs_a, refs_b) are pairs asked before: k-center keeps away from them.
    Ensemble selectors need ``ensemble`` (a :class:`RewardEnsemble`).
    """
    check_selector(selector, has_ensemble=ensemble is not None)
    if n_queries <= 0:
        raise PbrlError(f"number of queries must be positive, got {n_queries}")
    needs_ensemble = selector in ENSEMBLE_SELECTORS
    if selector == "uniform":
        both = sample_segments(ds, 2 * n_queries, length, rng, episodes=episodes)
        return both[:n_queries], both[n_queries:]
    if pool_factor < 1:
        raise PbrlError(f"pool_factor must be >= 1, got {pool_factor}")
    pool = n_queries * pool_factor
    both = sample_segments(ds, 2 * pool, length, rng, episodes=episodes)
    pa, pb = both[:pool], both[pool:]
    if needs_ensemble:
        probs = _ensemble_probs(ds, pa, pb, ensemble)  # type: ignore[arg-type]
        score_fn: Callable[[np.ndarray], np.ndarray] = (
            disagreement_scores if "disagreement" in selector else entropy_scores
        )
        scores = score_fn(probs)
        keep = n_queries if not selector.startswith("kcenter") else max(n_queries, pool // 2)
        # stable sort on the negated score: ties keep pool order, so results are reproducible
        top = np.argsort(-scores, kind="stable")[:keep]
        if not selector.startswith("kcenter"):
            return pa[top], pb[top]
        pa, pb = pa[top], pb[top]
    proj_rng = np.random.default_rng(0)  # fixed projection: same features across rounds
    proj = proj_rng.standard_normal((2 * length * ds.obs_dim, KCENTER_DIM), dtype=np.float32)
    proj /= np.float32(np.sqrt(KCENTER_DIM))
    feats = _pair_features(ds, pa, pb, proj)
    centers = None
    if labelled is not None and len(labelled[0]):
        la = np.asarray(labelled[0], dtype=np.int64)
        lb = np.asarray(labelled[1], dtype=np.int64)
        same_len = (la[:, 2] == length) & (lb[:, 2] == length)
        if same_len.any():
            centers = _pair_features(ds, la[same_len], lb[same_len], proj)
    idx = kcenter_greedy(feats, n_queries, rng, centers=centers)
    return pa[idx], pb[idx]
