"""Agreement and aggregation of a crowd's labels (pbrl/ui/crowd.py), against hand-computed
values and simulated annotators with known accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from pbrl.ui.crowd import (
    EQUAL,
    A,
    B,
    category,
    dawid_skene,
    fleiss_kappa,
    krippendorff_alpha,
    majority,
    pairwise_agreement,
    reliability,
    soft_prefer_b,
)

# four items, three annotators each: [A,A,A], [A,A,B], [B,B,B], [B,B,EQUAL]
ITEMS = [
    {"x": A, "y": A, "z": A},
    {"x": A, "y": A, "z": B},
    {"x": B, "y": B, "z": B},
    {"x": B, "y": B, "z": EQUAL},
]


def test_pairwise_agreement_by_hand():
    agree, pairs = pairwise_agreement(ITEMS)
    assert pairs == 12 and agree == pytest.approx(8 / 12)
    assert pairwise_agreement([{"x": A}]) == (None, 0)


def test_fleiss_kappa_by_hand():
    # P_i = 1, 1/3, 1, 1/3 -> P = 2/3; p_j = 5/12, 6/12, 1/12 -> P_e = 62/144
    assert fleiss_kappa(ITEMS) == pytest.approx((2 / 3 - 62 / 144) / (1 - 62 / 144))
    assert fleiss_kappa([{"x": A}]) is None


def test_krippendorff_alpha_by_hand_and_with_missing_answers():
    # coincidences: o_AA 4, o_BB 4, o_AB = o_BA = 1, o_BE = o_EB = 1; n_c 5, 6, 1; n 12
    assert krippendorff_alpha(ITEMS) == pytest.approx(1 - 11 * 4 / 82)
    perfect = [{"x": A, "y": A}, {"x": B, "y": B, "z": B}, {"y": EQUAL, "z": EQUAL}, {"x": A}]
    assert krippendorff_alpha(perfect) == pytest.approx(1.0)
    # one item with a single answer adds nothing
    assert krippendorff_alpha([*ITEMS, {"x": EQUAL}]) == pytest.approx(krippendorff_alpha(ITEMS))
    assert krippendorff_alpha([{"x": A, "y": A}]) is None  # no spread: undefined


def test_majority_and_categories():
    assert majority({"x": A, "y": A, "z": B}) == A
    assert majority({"x": A, "y": B}) == EQUAL
    assert majority({}) is None
    assert [category(p) for p in (0.0, 1.0, 0.5)] == [A, B, EQUAL]


def test_dawid_skene_finds_the_careful_annotators():
    rng = np.random.default_rng(0)
    n = 300
    truth = rng.choice([A, B], size=n)
    items = []
    for t in truth:
        item = {}
        for name in ("good1", "good2", "good3"):
            item[name] = int(t) if rng.random() < 0.8 else int(1 - t)
        for name in ("spam1", "spam2"):
            item[name] = int(rng.integers(0, 3))
        items.append(item)
    post, conf = dawid_skene(items)
    assert post.shape == (n, 3)
    np.testing.assert_allclose(post.sum(axis=1), 1.0)
    ds_acc = float((post.argmax(axis=1) == truth).mean())
    maj_acc = float(np.mean([majority(i) == t for i, t in zip(items, truth, strict=True)]))
    # three 80% annotators decide by majority 90% of the time; spam drags the crowd vote down
    assert ds_acc > maj_acc + 0.05 and ds_acc > 0.8
    for name in ("good1", "good2", "good3"):
        assert 0.7 < reliability(conf[name]) < 0.9
    for name in ("spam1", "spam2"):
        assert reliability(conf[name]) < 0.45
    np.testing.assert_array_equal(soft_prefer_b(post) > 0.5, post.argmax(axis=1) == B)
    # a pair everyone calls equal stays near 0.5
    post, _ = dawid_skene([*items, {name: EQUAL for name in items[0]}])
    assert post[-1].argmax() == EQUAL and abs(soft_prefer_b(post)[-1] - 0.5) < 0.05
