"""Benchmark metrics against scikit-learn and straightforward per-spec references, plus hand cases."""
import warnings

import numpy as np
import pytest
import torch
from skimage import measure
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

from omnipose.evaluation import metrics as M


# ----------------------------------------------------------------------------- references, written from the spec
def reference_f1_max(labels, scores):
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    return np.max(f1[np.isfinite(f1)])


def reference_pixel_f1_max(masks, maps):
    normalised = (maps - maps.min()) / (maps.max() - maps.min())
    gt = masks.astype(bool)
    best = []
    for s in np.arange(0.0, 1.0 + 1e-3, 0.05):
        # The benchmark runs NumPy 1.26, which compares a float64 scalar with a float32 array in float32.
        predicted = normalised > np.asarray(s).astype(maps.dtype)
        intersection = np.logical_and(gt, predicted).sum()
        precision = intersection / (predicted.sum() + 1e-8)
        recall = intersection / (gt.sum() + 1e-8)
        best.append(2 * precision * recall / (precision + recall + 1e-8))
    return max(best)


def reference_aupro(masks, maps, steps=200, fpr_limit=0.3):
    """cflow-ad / ADer AUPRO, one threshold at a time (regions labelled once with skimage)."""
    low, high = maps.min(), maps.max()
    delta = (high - low) / steps
    regions = [measure.regionprops(measure.label(m)) for m in masks]
    negatives = 1 - masks
    pros, fprs = [], []
    for th in np.arange(low, high, delta):
        binary = maps > th
        overlaps = [b[r.coords[:, 0], r.coords[:, 1]].sum() / r.area for b, rs in zip(binary, regions) for r in rs]
        pros.append(np.mean(overlaps))
        fprs.append(np.logical_and(negatives, binary).sum() / negatives.sum())
    pros, fprs = np.array(pros), np.array(fprs)
    kept = fprs < fpr_limit
    fprs = fprs[kept]
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    return auc(fprs, pros[kept])


def blob_masks(rng, count, height, width, defective_fraction=0.5):
    """(N, H, W) uint8 masks with 0-3 rectangular and diagonal blobs on the defective images."""
    masks = np.zeros((count, height, width), np.uint8)
    for i in range(int(count * (1 - defective_fraction)), count):
        for _ in range(rng.integers(1, 4)):
            r, c = rng.integers(0, height), rng.integers(0, width)
            masks[i, max(0, r - 3) : r + 3, max(0, c - 4) : c + 2] = 1
        r, c = rng.integers(0, height - 3), rng.integers(0, width - 3)
        masks[i, [r, r + 1, r + 2], [c, c + 1, c + 2]] = 1  # a diagonal line: one region only in 8-connectivity
    return masks


# ----------------------------------------------------------------------------- image level vs scikit-learn
@pytest.mark.parametrize("seed", range(12))
def test_image_metrics_equal_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    # Half the seeds use a handful of distinct values, so ties between and within labels abound.
    scores = rng.integers(0, 6, n).astype(np.float32) if seed % 2 else rng.normal(size=n)
    got = M.image_metrics(labels, scores)
    assert got["AUROC_sp"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert got["AP_sp"] == pytest.approx(average_precision_score(labels, scores), abs=1e-9)
    assert got["F1max_sp"] == pytest.approx(reference_f1_max(labels, scores), abs=1e-9)


def test_auroc_hand_cases():
    assert M.auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # positives 0.5, 0.9 vs negatives 0.5, 0.2: three wins and one tie (counts 1/2) -> 3.5 / 4
    assert M.auroc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)
    assert M.auroc([1, 1, 0], [0.2, 0.2, 0.2]) == pytest.approx(0.5)  # all tied: legitimately 0.5


def test_average_precision_and_f1_hand_case():
    labels, scores = [1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]
    # thresholds 0.9: P=1, R=1/2; 0.7: P=2/3, R=1 -> AP = 1/2 * 1 + 1/2 * 2/3
    assert M.average_precision(labels, scores) == pytest.approx(0.5 + 1 / 3)
    # F1 = 2TP / (TP + FP + #pos): 2/3 at 0.9, 4/5 at 0.7
    assert M.f1_max(labels, scores) == pytest.approx(0.8)
    assert M.best_f1_threshold(M.rank_scores(labels, scores)) == pytest.approx(0.7)


# ----------------------------------------------------------------------------- pixel level vs references
@pytest.mark.parametrize("seed", range(4))
def test_pixel_metrics_equal_references_with_ties(seed):
    rng = np.random.default_rng(100 + seed)
    masks = blob_masks(rng, 6, 24, 28)
    maps = (rng.random(masks.shape) + masks * rng.uniform(0.2, 1.0)).astype(np.float32)
    if seed % 2:
        maps = np.round(maps * 8) / 8  # heavy ties, float32 kept
    got = M.pixel_metrics(maps, masks)
    assert got["AUROC_px"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9)
    assert got["AP_px"] == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=1e-9)
    assert got["F1max_px"] == pytest.approx(reference_pixel_f1_max(masks, maps), abs=1e-9)
    assert got["AUPRO_px"] == pytest.approx(reference_aupro(masks, maps), abs=1e-9)
    # The single-metric functions agree with the combined one.
    assert M.pixel_auroc(maps, masks) == got["AUROC_px"]
    assert M.aupro(maps, masks) == got["AUPRO_px"]


def test_pixel_auroc_and_ap_on_a_million_pixels_equal_sklearn():
    rng = np.random.default_rng(7)
    masks = blob_masks(rng, 16, 250, 250, defective_fraction=0.75)
    maps = (np.round(rng.random(masks.shape) * 200) / 200 + masks * 0.3).astype(np.float32)
    ranked = M.rank_pixels(maps, masks, label_regions=False)
    assert M.auroc_ranked(ranked) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9)
    assert M.average_precision_ranked(ranked) == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=1e-9)


def test_aupro_hand_case_uses_8_connectivity_and_pools_regions_over_images():
    # Values 0, 0.3 and 1 only: thresholds in [0, 0.3) keep the pixels >= 0.3, those in [0.3, 1)
    # keep the 1s; so the curve has two distinct points, A and B.
    maps = np.zeros((2, 4, 4))
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 0, :2] = True  # region a: area 2
    masks[0, [2, 3], [2, 3]] = True  # region b: area 2, diagonal = one region in 8-connectivity
    masks[1, 1, 1] = True  # region c: area 1
    maps[0, 0, 0], maps[0, 0, 1], maps[0, 2, 2] = 1.0, 0.3, 0.3
    maps[0, 1, 3], maps[0, 3, 0] = 1.0, 0.3  # normal pixels
    maps[1, 1, 1], maps[1, 0, 3] = 1.0, 0.3
    # A: overlaps a 2/2, b 1/2, c 1/1 -> PRO 2.5/3; FP 3 of 27. B: a 1/2, b 0, c 1 -> PRO 1.5/3; FP 1 of 27.
    # Rescaled FPRs are 1 (A) and 0 (B): area = (PRO_A + PRO_B) / 2 = 2/3.
    # (4-connectivity would split b and give 0.5625; a per-image mean would differ too.)
    assert M.aupro(maps, masks) == pytest.approx(2 / 3, abs=1e-12)
    assert reference_aupro(masks.astype(np.uint8), maps) == pytest.approx(2 / 3, abs=1e-12)


def test_pixel_f1_hand_case_is_invariant_to_affine_maps():
    masks = np.array([[[0, 0, 1, 1]]], bool)
    maps = np.array([[[0.0, 0.5, 0.8, 1.0]]], np.float32)
    # s in [0.5, 0.8) predicts exactly the two anomalous pixels: F1 = 1 up to the 1e-8 terms.
    assert M.pixel_f1_max(maps, masks) == pytest.approx(1.0, abs=1e-7)
    assert M.pixel_f1_max(maps * 10 + 5, masks) == pytest.approx(1.0, abs=1e-7)
    shuffled = np.array([[[1.0, 0.8, 0.5, 0.0]]], np.float32)  # the anomalous pixels score lowest
    # best is s = 0: predicts 3 pixels, 1 right: P 1/3, R 1/2 -> F1 = 0.4
    assert M.pixel_f1_max(shuffled, masks) == pytest.approx(0.4, abs=1e-7)


def test_ragged_sequences_equal_the_concatenated_pixels():
    rng = np.random.default_rng(3)
    masks = [rng.random((5, 7)) < 0.3, rng.random((9, 4)) < 0.3]
    maps = [rng.random(m.shape).astype(np.float32) + m for m in masks]
    flat_masks = np.concatenate([m.ravel() for m in masks])
    flat_maps = np.concatenate([m.ravel() for m in maps])
    assert M.pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(flat_masks, flat_maps), abs=1e-12)


# ----------------------------------------------------------------------------- undefined and bad input
def test_one_label_gives_undefined_with_a_reason_never_a_number():
    value = M.auroc([0, 0, 0], [0.1, 0.2, 0.3])
    assert isinstance(value, M.Undefined) and "no anomalous" in value.reason
    assert M.format_metric(value) == "undefined" and f"{value:.3f}" == "undefined"
    with pytest.raises(TypeError):
        value + 1.0  # an undefined metric cannot leak into an average unnoticed
    assert isinstance(M.average_precision([1, 1], [0.1, 0.2]), M.Undefined)
    assert "no normal" in M.f1_max([1, 1], [0.1, 0.2]).reason
    maps = np.random.default_rng(0).random((2, 4, 4))
    for name, result in M.pixel_metrics(maps, np.zeros((2, 4, 4), bool)).items():
        assert isinstance(result, M.Undefined), name


def test_aupro_of_constant_maps_is_undefined():
    masks = np.zeros((1, 4, 4), bool)
    masks[0, 0, 0] = True
    assert "constant" in M.aupro(np.ones((1, 4, 4)), masks).reason


def test_nan_scores_and_maps_are_errors_naming_the_item():
    with pytest.raises(M.MetricInputError, match="img_b"):
        M.auroc([0, 1, 1], [0.1, np.nan, 0.3], names=["img_a", "img_b", "img_c"])
    maps = np.zeros((2, 3, 3))
    maps[1, 0, 0] = np.inf
    with pytest.raises(M.MetricInputError, match="Burrs/003"):
        M.pixel_auroc(maps, np.ones((2, 3, 3), bool), names=["good/001", "Burrs/003"])


def test_non_binary_masks_and_labels_are_errors():
    masks = np.zeros((1, 3, 3))
    masks[0, 1, 1] = 255
    with pytest.raises(M.MetricInputError, match="not binary"):
        M.pixel_auroc(np.zeros((1, 3, 3)), masks, names=["Stains/7"])
    with pytest.raises(M.MetricInputError, match="labels"):
        M.auroc([0, 2, 1], [0.1, 0.2, 0.3])


def test_count_mismatch_is_an_error():
    with pytest.raises(M.MetricInputError, match="2 anomaly maps but 3 masks"):
        M.pixel_auroc(np.zeros((2, 3, 3)), np.zeros((3, 3, 3), bool))


# ----------------------------------------------------------------------------- resizing
def test_resize_bilinear_equals_torch_interpolate():
    rng = np.random.default_rng(5)
    for source, target in [((7, 9), (16, 20)), ((16, 20), (7, 9)), ((224, 224), (400, 400)), ((5, 5), (5, 8))]:
        image = rng.random(source).astype(np.float32)
        expected = torch.nn.functional.interpolate(
            torch.from_numpy(image)[None, None], size=target, mode="bilinear", align_corners=False
        )[0, 0].numpy()
        np.testing.assert_allclose(M.resize_bilinear(image, target), expected, atol=1e-5)


def test_size_mismatch_resizes_maps_to_masks_and_warns_with_counts():
    rng = np.random.default_rng(11)
    masks = blob_masks(rng, 2, 16, 16, defective_fraction=1.0).astype(bool)
    small = rng.random((2, 8, 8)).astype(np.float32)
    with pytest.warns(M.MapResizedWarning, match="resized 2 of 2 .* 8x8 -> 16x16"):
        got = M.pixel_auroc(small, masks)
    upsampled = np.stack([M.resize_bilinear(m, (16, 16)) for m in small])
    assert got == pytest.approx(roc_auc_score(masks.ravel(), upsampled.ravel()), abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same sizes: no warning
        M.pixel_auroc(upsampled, masks)


# ----------------------------------------------------------------------------- image score
def test_image_score_from_map():
    anomaly_map = np.array([[0.0, 1.0], [3.0, 2.0]])
    assert M.image_score_from_map(anomaly_map) == 3.0
    assert M.image_score_from_map(anomaly_map, "topk_mean", top_k=2) == pytest.approx(2.5)
    assert M.image_score_from_map(anomaly_map, "topk_mean", top_k=0.75) == pytest.approx(2.0)  # ceil(3) pixels
    with pytest.raises(ValueError, match="unknown image score method"):
        M.image_score_from_map(anomaly_map, "median")
    with pytest.raises(M.MetricInputError):
        M.image_score_from_map(np.array([[np.nan]]))


def test_curve_points_are_monotone_and_span_the_unit_square():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 5000)
    ranked = M.rank_scores(labels, rng.random(5000) + labels * 0.5)
    points = M.curve_points(ranked, max_points=100)
    assert points["fpr"].size <= 102
    assert np.all(np.diff(points["fpr"]) >= 0) and np.all(np.diff(points["tpr"]) >= 0)
    assert points["fpr"][-1] == 1.0 and points["tpr"][-1] == 1.0
