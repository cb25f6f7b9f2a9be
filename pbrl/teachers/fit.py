"""Fitting a B-Pref teacher to a human's answers on known segments (``pbrl oracles fit``):
maximum-likelihood tie and skip thresholds, beta, mistake rate and myopic gamma."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pbrl.errors import DataError
from pbrl.teachers.bpref import BPrefTeacher
from pbrl.teachers.pairs import discount_weights


@dataclass(frozen=True)
class FitRecords:
    """Human answers on known segments: rewards left-padded with zeros to a common length
    (zeros in front leave the myopic sum unchanged, since the LAST step has weight 1)."""

    rewards_a: np.ndarray  # (M, L) float64
    rewards_b: np.ndarray  # (M, L)
    prefer_b: np.ndarray  # (M,) float in [0, 1], NaN where skipped

    @staticmethod
    def from_records(records: Iterable[Mapping[str, Any]] | Mapping[str, Any]) -> FitRecords:
        """From dicts ``{rewards_a, rewards_b, prefer_b}`` (prefer_b None/NaN = skipped) or
        one mapping of arrays with those keys."""
        if isinstance(records, Mapping):
            ra = [np.asarray(r, dtype=np.float64).reshape(-1) for r in records["rewards_a"]]
            rb = [np.asarray(r, dtype=np.float64).reshape(-1) for r in records["rewards_b"]]
            pb = [records["prefer_b"][i] for i in range(len(ra))]
        else:
            ra, rb, pb = [], [], []
            for i, rec in enumerate(records):
                try:
                    ra.append(np.asarray(rec["rewards_a"], dtype=np.float64).reshape(-1))
                    rb.append(np.asarray(rec["rewards_b"], dtype=np.float64).reshape(-1))
                    pb.append(rec.get("prefer_b"))
                except (KeyError, TypeError, ValueError) as e:
                    raise DataError(f"record {i}: needs numeric rewards_a, rewards_b ({e})") from e
        if len(ra) != len(rb) or len(ra) != len(pb):
            raise DataError("fit records: rewards_a, rewards_b and prefer_b differ in count")
        if not ra:
            raise DataError("fit records: no records")
        lens = [max(a.size, b.size) for a, b in zip(ra, rb, strict=True)]
        L = max(lens)
        A = np.zeros((len(ra), L))
        B = np.zeros((len(ra), L))
        for i, (a, b) in enumerate(zip(ra, rb, strict=True)):
            if a.size == 0 or b.size == 0:
                raise DataError(f"record {i}: empty segment")
            A[i, L - a.size :] = a
            B[i, L - b.size :] = b
        for name, arr in (("rewards_a", A), ("rewards_b", B)):
            if not np.all(np.isfinite(arr)):
                i = int(np.argwhere(~np.isfinite(arr))[0][0])
                raise DataError(f"record {i}: field '{name}' has NaN or inf")
        p = np.empty(len(pb), dtype=np.float64)
        for i, v in enumerate(pb):
            if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
                raise DataError(f"record {i}: prefer_b must be a number or null, got {v!r}")
            p[i] = np.nan if v is None else float(v)
        bad = np.flatnonzero(~np.isnan(p) & ((p < 0) | (p > 1)))
        if bad.size:
            raise DataError(f"record {int(bad[0])}: prefer_b must be in [0, 1], got {p[bad[0]]}")
        return FitRecords(A, B, p)


def _fit_threshold(x: np.ndarray, positive: np.ndarray) -> tuple[float, int]:
    """Threshold t minimising #(positive with x >= t) + #(negative with x < t), with t a
    midpoint between sorted values (0 when nothing below is positive). -> (t, mismatches)."""
    order = np.argsort(x, kind="stable")
    xs, ps = x[order], positive[order]
    # k = number of rows predicted positive (the k smallest x)
    neg_below = np.concatenate([[0], np.cumsum(~ps)])
    pos_above = ps.sum() - np.concatenate([[0], np.cumsum(ps)])
    cost = neg_below + pos_above
    # only cut between distinct values
    valid = np.ones(len(xs) + 1, dtype=bool)
    valid[1:-1] = xs[1:] > xs[:-1]
    cost = np.where(valid, cost, np.iinfo(np.int64).max)
    k = int(np.argmin(cost))
    if k == 0:
        return 0.0, int(cost[0])
    if k == len(xs):
        return float(xs[-1]) + 1e-9 + abs(float(xs[-1])) * 1e-9, int(cost[k])
    return float(0.5 * (xs[k - 1] + xs[k])), int(cost[k])


def _mixture_nll(params: Any, x: Any, t: Any) -> Any:
    """Negative log-likelihood of soft targets ``t`` under
    P(b) = (1 - eps) sigmoid(beta x) + eps (1 - sigmoid(beta x)),
    params = (log beta, logit(2 eps)); eps stays in (0, 0.5) (beyond, labels would invert)."""
    import torch

    beta = params[0].clamp(-30, 30).exp()
    eps = 0.5 * torch.sigmoid(params[1])
    s = torch.sigmoid(beta * x)
    p = ((1 - eps) * s + eps * (1 - s)).clamp(1e-12, 1 - 1e-12)
    return -(t * p.log() + (1 - t) * (1 - p).log()).sum()


def _lbfgs(x: Any, t: Any, start: tuple[float, float]) -> tuple[float, float, float]:
    import torch

    params = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [params], max_iter=100, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _mixture_nll(params, x, t)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        val = float(_mixture_nll(params, x, t))
        beta = float(params[0].clamp(-30, 30).exp())
        eps = float(0.5 * torch.sigmoid(params[1]))
    return beta, eps, val


def _fit_beta_eps(
    dd: np.ndarray, y: np.ndarray, init_beta: float, warm: tuple[float, float] | None = None
) -> tuple[float, float, float]:
    """Maximum-likelihood (beta, eps) for targets ``y`` given score gaps ``dd``:
    -> (beta, eps, negative log-likelihood); torch L-BFGS from a default start and, when
    given, a warm start (a neighbouring gamma's solution)."""
    import torch

    x = torch.as_tensor(dd, dtype=torch.float64)
    t = torch.as_tensor(y, dtype=torch.float64)
    starts = [(math.log(init_beta), -3.0)]
    if warm is not None:
        b, e = warm
        starts.append((math.log(max(b, 1e-12)), math.log(max(2 * e, 1e-9) / max(1 - 2 * e, 1e-9))))
    fits = [_lbfgs(x, t, s) for s in starts]
    return min(fits, key=lambda f: f[2] if np.isfinite(f[2]) else math.inf)


def fit_teacher_details(
    records: Iterable[Mapping[str, Any]] | Mapping[str, Any] | FitRecords,
    *,
    name: str = "fitted",
    gamma_grid: np.ndarray | None = None,
) -> tuple[BPrefTeacher, dict[str, Any]]:
    """Maximum-likelihood B-Pref teacher for a set of human answers, plus fit diagnostics.

    - ``eps_equal`` (absolute): the tie threshold on ``|R_a - R_b|`` that misclassifies the
      fewest answers as tie / strict (the MLE when tie status is observed with small noise);
      ``eps_skip`` likewise on ``max(R_a, R_b)`` when some records were skipped.
    - ``beta``, ``eps_mistake``, ``gamma``: the likelihood of the strict (and soft) answers
      under ``P(b) = (1 - eps) sigmoid(beta dD) + eps (1 - sigmoid(beta dD))``, profiled over a
      gamma grid (0.5..1 by 0.05) then refined by golden-section search. A beta so large that
      ``beta x median |dD| > 100`` is reported as inf (a deterministic annotator).
    """
    fr = records if isinstance(records, FitRecords) else FitRecords.from_records(records)
    ra, rb, pb = fr.rewards_a, fr.rewards_b, fr.prefer_b
    answered = ~np.isnan(pb)
    ret_a, ret_b = ra.sum(axis=1), rb.sum(axis=1)
    info: dict[str, Any] = {"records": int(len(pb)), "answered": int(answered.sum())}

    eps_skip = 0.0
    if (~answered).any():
        # skipped iff max(R) <= delta: "positive" = skipped, sorted by max(R)
        eps_skip, miss = _fit_threshold(np.maximum(ret_a, ret_b), ~answered)
        info["skip_mismatches"] = miss
    gap = np.abs(ret_a - ret_b)[answered]
    p = pb[answered]
    ties = p == 0.5
    eps_equal, miss = _fit_threshold(gap, ties) if ties.any() else (0.0, 0)
    info["equal_mismatches"] = miss
    info["ties"] = int(ties.sum())

    use = ~ties
    if use.sum() < 10:
        raise DataError(f"fit records: only {int(use.sum())} non-tie answers; need at least 10")
    da, db, y = ra[answered][use], rb[answered][use], p[use]
    L = ra.shape[1]

    def profile(g: float, warm: tuple[float, float] | None = None) -> tuple[float, float, float]:
        dd = (db - da) @ discount_weights(g, L)
        scale = float(np.std(dd)) or 1.0
        return _fit_beta_eps(dd, y, 1.0 / scale, warm)

    # coarse gamma grid, then golden-section search inside the best cell's neighbours
    grid = np.round(np.arange(0.5, 1.0001, 0.05), 4) if gamma_grid is None else gamma_grid
    fits: list[tuple[float, float, float]] = []
    for g in grid:
        fits.append(profile(float(g), fits[-1][:2] if fits else None))
    i = int(np.argmin([f[2] for f in fits]))
    best_g, best = float(grid[i]), fits[i]
    phi = (math.sqrt(5) - 1) / 2
    a, b = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, len(grid) - 1)])
    c, d = b - phi * (b - a), a + phi * (b - a)
    fc, fd = profile(c, best[:2]), profile(d, best[:2])
    for _ in range(14):
        if fc[2] < fd[2]:
            b, d, fd = d, c, fc
            c = b - phi * (b - a)
            fc = profile(c, fd[:2])
        else:
            a, c, fc = c, d, fd
            d = a + phi * (b - a)
            fd = profile(d, fc[:2])
    for g, f in ((c, fc), (d, fd)):
        if f[2] < best[2]:
            best_g, best = g, f
    beta, eps_mistake, nll = best
    dd = (db - da) @ discount_weights(best_g, L)
    med = float(np.median(np.abs(dd))) if dd.size else 0.0
    if beta * med > 100.0:
        beta = math.inf
    info.update({"nll": nll, "nll_per_answer": nll / len(y), "strict_or_soft": int(len(y))})
    teacher = BPrefTeacher(
        name=name,
        beta=beta,
        gamma=min(best_g, 1.0),
        eps_mistake=eps_mistake,
        eps_skip=eps_skip,
        eps_equal=eps_equal,
        thresholds="absolute",
    )
    return teacher, info


def fit_teacher(
    records: Iterable[Mapping[str, Any]] | Mapping[str, Any] | FitRecords,
) -> BPrefTeacher:
    """The maximum-likelihood :class:`BPrefTeacher` for human answers on known segments
    (see :func:`fit_teacher_details`)."""
    return fit_teacher_details(records)[0]
