#!/usr/bin/env python3
"""engine/metrics against independent references on random cases with ties and many regions.

- AUROC (image and pixel): scikit-learn's roc_auc_score.
- F1-max: scikit-learn's precision_recall_curve, and a brute force over exact fractions for
  the threshold rule; F1 at a threshold, cleaning metrics: sklearn's precision/recall/f1_score
  with zero_division=1 (which matches the conventions of engine/detector/metrics.h).
- Components: scipy.ndimage.label with a 3x3 structure of ones (8-connectivity).
- AUPRO: written here by another algorithm than the C++ sweep: every distinct score is a
  threshold, each component's and the good pixels' counts above it come from binary searches
  of their sorted scores, and the clipped curve is integrated with numpy.trapz.

The C++ side is reached through tests/tools/metrics_probe (JSON in, JSON out).
Usage: python3 tests/python/test_metrics_reference.py path/to/metrics_probe
Exit status 0 only if every test passed.
"""

import fractions
import json
import math
import subprocess
import sys
import unittest
import warnings

import numpy as np
from scipy import ndimage
from sklearn.metrics import (f1_score, precision_recall_curve, precision_score, recall_score,
                             roc_auc_score)

PROBE = None  # set from argv in __main__
TOL = 1e-9
EIGHT = np.ones((3, 3), dtype=int)


# ---------------------------------------------------------------------------------------------
# Talking to the probe
# ---------------------------------------------------------------------------------------------

def encode(x):
    """A score as JSON: NaN and +/-Inf travel as strings."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def decode(x):
    return float(x) if isinstance(x, str) else x


def run_probe(cases):
    proc = subprocess.run([PROBE], input=json.dumps({"cases": cases}), capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"metrics_probe failed ({proc.returncode}): {proc.stderr}")
    results = json.loads(proc.stdout)["results"]
    assert len(results) == len(cases)
    return results


def image_case(op, scores, labels, **extra):
    return dict(op=op, scores=[encode(s) for s in scores], labels=[int(l) for l in labels],
                **extra)


def pixel_case(maps, masks, max_fpr):
    return dict(op="pixel", max_fpr=max_fpr,
                images=[dict(height=int(m.shape[0]), width=int(m.shape[1]),
                             map=[encode(v) for v in m.ravel()],
                             mask=[int(v) for v in k.ravel()]) for m, k in zip(maps, masks)])


# ---------------------------------------------------------------------------------------------
# Random inputs
# ---------------------------------------------------------------------------------------------

def tied_scores(rng, n, nonfinite=False):
    """Scores on a few levels (many ties), some continuous; optionally NaN and +/-Inf."""
    kind = rng.integers(3)
    if kind == 0:
        s = rng.integers(0, rng.integers(2, 8), size=n).astype(np.float64)
    elif kind == 1:
        s = rng.normal(size=n)
    else:
        s = np.where(rng.random(n) < 0.5, rng.integers(0, 4, size=n), rng.normal(size=n))
    if nonfinite:
        special = rng.choice([np.nan, np.inf, -np.inf], size=n)
        s = np.where(rng.random(n) < 0.25, special, s)
    return s


def both_class_labels(rng, n):
    labels = (rng.random(n) < rng.uniform(0.2, 0.8)).astype(np.uint8)
    labels[0], labels[1] = 0, 1
    return rng.permutation(labels)


def ranked(s):
    """The documented rank rule: NaN ranks with +Inf. Finite stand-ins for sklearn, which
    refuses non-finite input: +Inf -> 1e300, -Inf -> -1e300 (beyond every score drawn here)."""
    s = np.where(np.isnan(s), np.inf, s)
    return np.clip(s, -1e300, 1e300)


def random_mask(rng, h, w):
    """Rectangles, single pixels and diagonal pairs; sometimes empty (a good image)."""
    mask = np.zeros((h, w), dtype=np.uint8)
    if rng.random() < 0.25:
        return mask
    for _ in range(rng.integers(1, 5)):
        y, x = rng.integers(h), rng.integers(w)
        shape = rng.integers(3)
        if shape == 0:
            mask[y:y + rng.integers(1, 5), x:x + rng.integers(1, 6)] = rng.integers(1, 256)
        elif shape == 1:
            mask[y, x] = 1
        else:  # a diagonal pair: one 8-connected component, two 4-connected ones
            mask[y, x] = 1
            if y + 1 < h and x + 1 < w:
                mask[y + 1, x + 1] = 1
    return mask


def random_pixel_set(rng, nonfinite=False):
    maps, masks = [], []
    for _ in range(rng.integers(1, 5)):
        h, w = int(rng.integers(1, 16)), int(rng.integers(1, 21))
        mask = random_mask(rng, h, w)
        s = tied_scores(rng, h * w, nonfinite).reshape(h, w)
        s = s + 1.5 * (mask != 0) * rng.random()  # defects score higher, by a random margin
        maps.append(s.astype(np.float32))
        masks.append(mask)
    # Guarantee a defect component and a good pixel somewhere.
    masks[0].flat[0] = 1
    if all((k != 0).all() for k in masks):
        maps.append(np.zeros((1, 2), dtype=np.float32))
        masks.append(np.zeros((1, 2), dtype=np.uint8))
    return maps, masks


# ---------------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------------

def f1_max_reference(scores, labels):
    """Brute force over distinct rank values with exact fractions; ties -> highest threshold."""
    r = np.where(np.isnan(scores), np.inf, scores)
    positives = int((labels != 0).sum())
    best = (fractions.Fraction(-1), None)
    for t in sorted(set(r.tolist()), reverse=True):
        predicted = r >= t
        tp = int((predicted & (labels != 0)).sum())
        fp = int((predicted & (labels == 0)).sum())
        f1 = fractions.Fraction(2 * tp, tp + fp + positives)
        if f1 > best[0]:
            best = (f1, t, tp, fp)
    f1, t, tp, fp = best
    return float(f1), t, tp / (tp + fp), tp / positives


def aupro_reference(maps, masks, max_fpr):
    scores = [np.where(np.isnan(m), np.inf, m).astype(np.float64) for m in maps]
    good = np.sort(np.concatenate([s[k == 0] for s, k in zip(scores, masks)]))
    regions = []
    for s, k in zip(scores, masks):
        lab, n = ndimage.label(k != 0, structure=EIGHT)
        regions += [np.sort(s[lab == i]) for i in range(1, n + 1)]
    thresholds = np.unique(np.concatenate([s.ravel() for s in scores]))[::-1]

    def above(sorted_scores):  # how many scores exceed each threshold
        return len(sorted_scores) - np.searchsorted(sorted_scores, thresholds, side="right")

    fpr = above(good) / len(good)
    pro = np.mean([above(r) / len(r) for r in regions], axis=0)
    fpr, pro = np.append(fpr, 1.0), np.append(pro, 1.0)  # t = -Inf: everything predicted
    keep = np.searchsorted(fpr, max_fpr, side="right")  # points with fpr <= max_fpr
    x, y = fpr[:keep], pro[:keep]
    if x[-1] < max_fpr:
        x0, x1, y0, y1 = fpr[keep - 1], fpr[keep], pro[keep - 1], pro[keep]
        x = np.append(x, max_fpr)
        y = np.append(y, y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0))
    return np.trapz(y, x) / max_fpr, len(regions), len(good)


def f1_sklearn(y_true, y_pred):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (f1_score(y_true, y_pred, zero_division=1),
                precision_score(y_true, y_pred, zero_division=1),
                recall_score(y_true, y_pred, zero_division=1))


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------

class ImageMetrics(unittest.TestCase):
    def test_auroc_matches_sklearn(self):
        rng = np.random.default_rng(1)
        cases, expected = [], []
        for i in range(300):
            n = int(rng.integers(2, 80))
            s, l = tied_scores(rng, n, nonfinite=i % 3 == 0), both_class_labels(rng, n)
            cases.append(image_case("auroc", s, l))
            expected.append(roc_auc_score(l, ranked(s)))
        for c, got, want in zip(cases, run_probe(cases), expected):
            self.assertAlmostEqual(got["auroc"], want, delta=TOL, msg=json.dumps(c))

    def test_f1_max_matches_precision_recall_curve_and_brute_force(self):
        rng = np.random.default_rng(2)
        cases, inputs = [], []
        for i in range(300):
            n = int(rng.integers(2, 60))
            s, l = tied_scores(rng, n, nonfinite=i % 3 == 0), both_class_labels(rng, n)
            cases.append(image_case("f1_max", s, l))
            inputs.append((s, l))
        for c, got, (s, l) in zip(cases, run_probe(cases), inputs):
            p, r, _ = precision_recall_curve(l, ranked(s))
            with np.errstate(invalid="ignore", divide="ignore"):
                sk_best = np.nanmax(2 * p * r / (p + r))
            self.assertAlmostEqual(got["f1"], sk_best, delta=TOL, msg=json.dumps(c))
            f1, t, precision, recall = f1_max_reference(s, l)
            self.assertAlmostEqual(got["f1"], f1, delta=TOL)
            self.assertEqual(decode(got["threshold"]), t, msg=json.dumps(c))
            self.assertAlmostEqual(got["precision"], precision, delta=TOL)
            self.assertAlmostEqual(got["recall"], recall, delta=TOL)

    def test_f1_at_matches_sklearn_with_strict_rule(self):
        rng = np.random.default_rng(3)
        cases, expected = [], []
        for i in range(300):
            n = int(rng.integers(1, 40))
            s, l = tied_scores(rng, n, nonfinite=i % 3 == 0), (rng.random(n) < 0.4).astype(int)
            finite = s[np.isfinite(s)]
            # Thresholds on score values (where ">" and ">=" differ) and between them.
            t = float(rng.choice(finite)) if len(finite) and rng.random() < 0.6 else rng.normal()
            cases.append(image_case("f1_at", s, l, threshold=t))
            expected.append(f1_sklearn(l, (np.where(np.isnan(s), np.inf, s) > t).astype(int)))
        for c, got, (f1, precision, recall) in zip(cases, run_probe(cases), expected):
            self.assertAlmostEqual(got["f1"], f1, delta=TOL, msg=json.dumps(c))
            self.assertAlmostEqual(got["precision"], precision, delta=TOL, msg=json.dumps(c))
            self.assertAlmostEqual(got["recall"], recall, delta=TOL, msg=json.dumps(c))

    def test_errors_name_the_problem(self):
        got = run_probe([image_case("auroc", [1, 2], [1, 1]),
                         image_case("auroc", [1, 2], [0]),
                         image_case("f1_max", [1, 2], [0, 0]),
                         image_case("f1_at", [1], [1], threshold="nan")])
        self.assertIn("no good images", got[0]["error"])
        self.assertIn("differ in length", got[1]["error"])
        self.assertIn("no defective images", got[2]["error"])
        self.assertIn("threshold is NaN", got[3]["error"])


class PixelMetrics(unittest.TestCase):
    def test_components_match_scipy_8_connectivity(self):
        rng = np.random.default_rng(4)
        cases, masks = [], []
        for _ in range(200):
            h, w = int(rng.integers(1, 20)), int(rng.integers(1, 20))
            mask = (rng.random((h, w)) < rng.uniform(0.1, 0.6)).astype(np.uint8)
            cases.append(dict(op="components", height=h, width=w, mask=mask.ravel().tolist()))
            masks.append(mask)
        differs_from_4 = 0
        for got, mask in zip(run_probe(cases), masks):
            ref, n = ndimage.label(mask, structure=EIGHT)
            differs_from_4 += ndimage.label(mask)[1] != n
            labels = np.array(got["labels"]).reshape(mask.shape)
            self.assertEqual(got["n"], n)
            self.assertTrue(((labels < 0) == (mask == 0)).all())
            # Same partition: each C++ label is exactly one scipy label.
            pairs = set(zip(labels[mask != 0].tolist(), ref[mask != 0].tolist()))
            self.assertEqual(len(pairs), n)
            # Numbered 0..n-1 in raster order of first pixels.
            flat = labels.ravel()
            firsts = [int(np.argmax(flat == i)) for i in range(n)]
            self.assertEqual(firsts, sorted(firsts))
        self.assertGreater(differs_from_4, 0)  # the cases do tell 8- from 4-connectivity

    def test_pixel_auroc_and_aupro_match_references(self):
        rng = np.random.default_rng(5)
        cases, inputs = [], []
        for i in range(120):
            maps, masks = random_pixel_set(rng, nonfinite=i % 4 == 0)
            max_fpr = float(rng.choice([0.3, 0.3, 1.0, 0.05, rng.uniform(0.001, 1.0)]))
            cases.append(pixel_case(maps, masks, max_fpr))
            inputs.append((maps, masks, max_fpr))
        for c, got, (maps, masks, max_fpr) in zip(cases, run_probe(cases), inputs):
            msg = json.dumps(c)[:2000]
            self.assertNotIn("error", got, msg=msg)
            scores = np.concatenate([ranked(m.astype(np.float64)).ravel() for m in maps])
            truth = np.concatenate([(k != 0).ravel() for k in masks])
            self.assertAlmostEqual(got["auroc"], roc_auc_score(truth, scores), delta=TOL, msg=msg)
            aupro, n_regions, n_good = aupro_reference(maps, masks, max_fpr)
            self.assertAlmostEqual(got["aupro"], aupro, delta=TOL, msg=msg)
            self.assertEqual(got["n_components"], n_regions)
            self.assertEqual(got["n_good_pixels"], n_good)
            self.assertEqual(got["n_pixels"], len(scores))
            self.assertEqual(got["pixel_auroc"], got["auroc"])
            self.assertEqual(got["aupro_alone"], got["aupro"])

    def test_aupro_with_one_large_tie_group(self):
        # Quantised to 3 levels: groups of hundreds of pixels cross max_fpr together.
        rng = np.random.default_rng(6)
        mask = np.zeros((40, 50), dtype=np.uint8)
        mask[5:15, 5:20] = 1
        mask[30:33, 40:41] = 1
        mask[20, 20] = mask[21, 21] = 1
        m = rng.integers(0, 3, size=mask.shape).astype(np.float32) + (mask != 0)
        got = run_probe([pixel_case([m], [mask], 0.3)])[0]
        aupro, n_regions, _ = aupro_reference([m], [mask], 0.3)
        self.assertEqual(n_regions, 3)
        self.assertAlmostEqual(got["aupro"], aupro, delta=TOL)

    def test_errors_name_the_problem(self):
        good = np.zeros((2, 2), dtype=np.uint8)
        m = np.zeros((2, 2), dtype=np.float32)
        got = run_probe([pixel_case([m], [good], 0.3),
                         pixel_case([m], [good + 1], 0.3),
                         pixel_case([m], [good + np.eye(2, dtype=np.uint8)], 0.0)])
        self.assertIn("no defect components", got[0]["error"])
        self.assertIn("no good pixels", got[1]["error"])
        self.assertIn("max_fpr 0 is not in (0, 1]", got[2]["error"])


class CleaningMetrics(unittest.TestCase):
    def test_matches_sklearn_on_random_sets(self):
        rng = np.random.default_rng(7)
        cases, truths = [], []
        for i in range(200):
            n = int(rng.integers(1, 60))
            contaminated = np.flatnonzero(rng.random(n) < (0 if i % 5 == 0 else 0.3))
            rejected = np.flatnonzero(rng.random(n) < (0 if i % 7 == 0 else 0.25))
            cases.append(dict(op="cleaning", n_total=n, rejected=rng.permutation(rejected).tolist(),
                              contaminated=contaminated.tolist()))
            y_true, y_pred = np.zeros(n, int), np.zeros(n, int)
            y_true[contaminated], y_pred[rejected] = 1, 1
            truths.append((y_true, y_pred))
        for c, got, (y_true, y_pred) in zip(cases, run_probe(cases), truths):
            f1, precision, recall = f1_sklearn(y_true, y_pred)
            msg = json.dumps(c)
            self.assertAlmostEqual(got["f1"], f1, delta=TOL, msg=msg)
            self.assertAlmostEqual(got["precision"], precision, delta=TOL, msg=msg)
            self.assertAlmostEqual(got["recall"], recall, delta=TOL, msg=msg)
            fp = int(((y_pred == 1) & (y_true == 0)).sum())
            clean = int((y_true == 0).sum())
            self.assertEqual(got["fp"], fp)
            self.assertEqual(got["false_rejections"], fp)
            self.assertEqual(got["tp"] + got["fp"] + got["fn"] + got["tn"], len(y_true))
            self.assertAlmostEqual(got["false_rejection_rate"], fp / clean if clean else 0.0,
                                   delta=TOL)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: test_metrics_reference.py path/to/metrics_probe")
    PROBE = sys.argv.pop(1)
    unittest.main()
