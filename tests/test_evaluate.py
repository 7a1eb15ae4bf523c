"""Protocols (PAD, M2AD-Invariant, M2AD-Synergy), fusion, tables and the evaluate command."""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from sklearn.metrics import average_precision_score, roc_auc_score

from omnipose.data import M2adImage
from omnipose.evaluation import evaluate as E
from omnipose.evaluation import metrics as M


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def torch_resize(image, size):
    return torch.nn.functional.interpolate(torch.from_numpy(image)[None, None], size=size, mode="bilinear",
                                           align_corners=False)[0, 0].numpy()


# ----------------------------------------------------------------------------- fusion
def test_fuse_scores_add_is_mean_and_mul_is_geometric_mean():
    assert E.fuse_scores([1.0, 4.0], "add") == pytest.approx(2.5)
    assert E.fuse_scores([1.0, 4.0], "mul") == pytest.approx(2.0)
    assert E.fuse_scores([2.0, 8.0, 4.0], "mul") == pytest.approx(4.0)
    with pytest.raises(M.MetricInputError, match="NG/002 view 001 has"):
        E.fuse_scores([-1.0, 4.0], "mul", "NG/002 view 001")


@pytest.mark.parametrize("source, target", [((40, 40), (16, 16)), ((7, 13), (20, 9)), ((400, 400), (224, 224))])
def test_resize_nearest_equals_pil(source, target):
    mask = (np.random.default_rng(0).random(source) > 0.5).astype(np.uint8) * 255
    expected = np.asarray(Image.fromarray(mask).resize(target[::-1], Image.NEAREST))
    np.testing.assert_array_equal(E.resize_nearest(mask, target), expected)


def test_fuse_maps_pixelwise_and_without_float32_underflow():
    maps = [np.array([[1.0, 2.0]], np.float32), np.array([[4.0, 8.0]], np.float32)]
    np.testing.assert_allclose(E.fuse_maps(maps, "add"), [[2.5, 5.0]])
    np.testing.assert_allclose(E.fuse_maps(maps, "mul"), [[2.0, 4.0]], rtol=1e-6)
    tiny = [np.full((1, 2), 1e-5, np.float32) * [1, 2] for _ in range(10)]  # float32 product: 1e-50 -> 0
    fused = E.fuse_maps([t.astype(np.float32) for t in tiny], "mul")
    assert fused.dtype == np.float32 and fused[0, 1] > fused[0, 0] > 0


# ----------------------------------------------------------------------------- M2AD-Synergy on a hand case
def synergy_case():
    """Specimens Good/000, Good/001, NG/002; views 001, 002; illuminations 01, 02; 2x2 maps."""
    images, scores, masks = [], [], []
    per_specimen = {("000", False): [0.45] * 4, ("001", False): [0.2] * 4, ("002", True): [0.1, 0.9, 0.1, 0.9]}
    for (specimen, anomalous), specimen_scores in per_specimen.items():
        k = 0
        for view in ("001", "002"):
            for illumination in ("01", "02"):
                images.append(M2adImage(Path(f"{specimen}/V{view}_L{illumination}.png"), specimen, anomalous, view, illumination, None))
                scores.append(specimen_scores[k])
                mask = np.zeros((2, 2), bool)
                if anomalous and view == "001":
                    mask[(0, 0) if illumination == "01" else (1, 1)] = True  # masks differ per illumination
                masks.append(mask)
                k += 1
    maps = [np.random.default_rng(i).random((2, 2)).astype(np.float32) for i in range(len(images))]
    return images, maps, masks, np.array(scores)


def test_synergy_object_and_view_instances_by_hand():
    images, maps, masks, scores = synergy_case()
    add = E.evaluate_m2ad_synergy(images, maps, masks, scores, E.EvaluationConfig(fusion="add"))
    mul = E.evaluate_m2ad_synergy(images, maps, masks, scores, E.EvaluationConfig(fusion="mul"))
    # Objects: NG/002 fuses to 0.5 ('add') or sqrt(0.1 * 0.9) = 0.3 ('mul') against normals 0.45 and 0.2.
    assert add.metrics["AUROC_obj_sp"] == pytest.approx(1.0)
    assert mul.metrics["AUROC_obj_sp"] == pytest.approx(0.5)
    # Views: only NG/002 view 001 has mask pixels (view 002 is normal at view level).
    # 'add': 0.5 vs [0.45, 0.45, 0.2, 0.2, 0.5] -> (4 + 1/2) / 5; 'mul': 0.3 vs [.., 0.3] -> (2 + 1/2) / 5.
    assert add.metrics["AUROC_view_sp"] == pytest.approx(0.9)
    assert mul.metrics["AUROC_view_sp"] == pytest.approx(0.5)
    assert add.counts["view_instances"] == 6 and add.counts["object_instances"] == 3
    assert add.counts["view_anomalous_pixels"] == 2  # the fused mask is the union of both illuminations
    assert set(add.metrics) == set(E.SYNERGY_METRICS)


def test_synergy_view_pixel_metrics_use_fused_maps():
    images, maps, masks, scores = synergy_case()
    for fusion in ("add", "mul"):
        result = E.evaluate_m2ad_synergy(images, maps, masks, scores, E.EvaluationConfig(fusion=fusion))
        fused_maps, fused_masks = [], []
        for start in range(0, len(images), 2):  # images are listed view by view, two illuminations each
            pair = maps[start : start + 2]
            fused_maps.append((pair[0] + pair[1]) / 2 if fusion == "add" else np.sqrt(pair[0].astype(np.float64) * pair[1]))
            fused_masks.append(masks[start] | masks[start + 1])
        flat_masks = np.concatenate([m.ravel() for m in fused_masks])
        flat_maps = np.concatenate([m.ravel() for m in fused_maps])
        assert result.metrics["AUROC_view_px"] == pytest.approx(roc_auc_score(flat_masks, flat_maps), abs=1e-6)
        assert result.metrics["AP_view_px"] == pytest.approx(average_precision_score(flat_masks, flat_maps), abs=1e-6)


# ----------------------------------------------------------------------------- PAD and Invariant on arrays
def test_pad_protocol_filters_normalises_and_labels_by_folder():
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 40, 40), bool)
    masks[3, 5:15, 5:15] = masks[4, 20:30, 10:25] = True  # image 5 is a defect with an empty mask
    maps = [rng.random((20, 20)).astype(np.float32) + 0.8 * np.asarray(Image.fromarray(m).resize((20, 20))) for m in masks]
    labels = np.array([0, 0, 0, 1, 1, 1])
    config = E.EvaluationConfig(image_size=(16, 16), gaussian_sigma=1.0)
    with pytest.warns(M.MapResizedWarning):
        result = E.evaluate_pad(maps, masks, labels, config=config)
    expected_maps = np.stack([gaussian_filter(torch_resize(m, (16, 16)), sigma=1.0) for m in maps])
    expected_maps = (expected_maps - expected_maps.min()) / (expected_maps.max() - expected_maps.min())
    expected_masks = np.stack([np.asarray(Image.fromarray(m).resize((16, 16), Image.NEAREST)) for m in masks])
    assert result.metrics["AUROC_px"] == pytest.approx(roc_auc_score(expected_masks.ravel(), expected_maps.ravel()), abs=1e-6)
    assert result.metrics["AUROC_sp"] == pytest.approx(roc_auc_score(labels, expected_maps.max(axis=(1, 2))), abs=1e-6)
    assert set(result.metrics) == set(E.PAD_METRICS)
    assert any("empty mask" in note for note in result.notes)


def test_invariant_labels_images_by_their_masks():
    rng = np.random.default_rng(1)
    masks = np.zeros((5, 12, 12), bool)
    masks[3, 2:5, 2:6] = masks[4, 7:9, 1:3] = True
    maps = (rng.random((5, 12, 12)) + masks * 0.5).astype(np.float32)
    result = E.evaluate_m2ad_invariant(list(maps), list(masks))
    labels = masks.any(axis=(1, 2))
    assert result.metrics["AUROC_sp"] == pytest.approx(roc_auc_score(labels, maps.max(axis=(1, 2))))
    assert result.metrics["AP_px"] == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()))
    assert set(result.metrics) == set(E.ADER_METRICS)


def test_config_defaults_and_unknown_metrics():
    assert E.EvaluationConfig().resolved().image_size == (224, 224)
    assert E.EvaluationConfig().resolved().gaussian_sigma == 4.0
    invariant = E.EvaluationConfig(protocol="m2ad-invariant").resolved()
    assert invariant.shape is None and invariant.gaussian_sigma == 0.0 and invariant.metrics == E.ADER_METRICS
    assert invariant.resolved() == invariant  # resolving twice changes nothing
    with pytest.raises(ValueError, match="AUPRO_view"):
        E.EvaluationConfig(protocol="pad", metrics=("AUPRO_view",)).resolved()


# ----------------------------------------------------------------------------- means and tables
def test_class_means_skip_and_name_undefined_classes():
    results = [
        E.ClassResult("A", "pad", {"AUROC_sp": 0.8, "AUROC_px": 0.9}, {}),
        E.ClassResult("B", "pad", {"AUROC_sp": M.Undefined("no anomalous images"), "AUROC_px": 0.7}, {}),
    ]
    means = E.class_means(results)
    assert means["mAUROC_sp"].value == pytest.approx(0.8) and means["mAUROC_sp"].undefined_in == ("B",)
    assert means["mAUROC_px"].value == pytest.approx(0.8) and means["mAUROC_px"].undefined_in == ()
    table = E.format_table(results)
    assert "undefined" in table and "80.00*" in table and "undefined in B" in table
    assert "undefined" in E.csv_text(results) and "| B | undefined | 70.00 |" in E.markdown_table(results)
    summary = E.results_to_dict(results)
    assert summary["classes"]["B"]["metrics"]["AUROC_sp"] is None
    assert summary["classes"]["B"]["undefined"]["AUROC_sp"] == "no anomalous images"
    only_undefined = E.class_means(results[1:])["mAUROC_sp"].value
    assert isinstance(only_undefined, M.Undefined)


def test_save_panel_writes_a_five_column_png(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((32, 32, 3))
    path = E.save_panel(tmp_path / "p.png", image, None, np.eye(16, dtype=bool), rng.random((16, 16)), 0.5)
    with Image.open(path) as panel:
        assert panel.width > 3 * panel.height
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]  # no temporary file left behind


# ----------------------------------------------------------------------------- the evaluate command
def make_mad_tree(root, pred, size=24, seed=0):
    """A MAD-layout class 'Toy' (3 good, 3 Burrs) and matching predictions."""
    rng = np.random.default_rng(seed)
    for kind in ("good", "Burrs"):
        for i in range(3):
            write_png(root / "Toy" / "test" / kind / f"{i}.png", (rng.random((size, size, 3)) * 255).astype(np.uint8))
            mask = np.zeros((size, size), np.uint8)
            if kind == "Burrs":
                mask[4 + i : 10 + i, 6:12] = 255
                write_png(root / "Toy" / "ground_truth" / kind / f"{i}_mask.png", mask)
            (pred / kind).mkdir(parents=True, exist_ok=True)
            np.save(pred / kind / f"{i}.npy", (rng.random((size, size)) + (mask > 0) * 0.6).astype(np.float32))


def run_cli(*argv):
    parser = E.add_evaluate_arguments(argparse.ArgumentParser())
    return E.run_evaluate(parser.parse_args([str(a) for a in argv]))


def test_cli_pad_writes_tables_and_figures(tmp_path, capsys):
    data, pred, out = tmp_path / "data", tmp_path / "pred", tmp_path / "out"
    make_mad_tree(data, pred)
    code = run_cli("--pred", pred, "--data", data, "--class", "Toy", "--out", out, "--image-size", "native",
                   "--metrics", ",".join(E.ADER_METRICS), "--panels", "1")
    assert code == 0
    printed = capsys.readouterr().out
    assert "AUROC_px" in printed and "Toy" in printed
    names = {p.name for p in out.iterdir()}
    assert {"metrics.json", "metrics.csv", "metrics.md", "Toy_roc.png", "Toy_pr.png", "panels"} == names
    summary = json.loads((out / "metrics.json").read_text())
    # The same numbers as the protocol on the arrays read back by hand.
    keys = [f"{kind}/{i}" for kind in ("Burrs", "good") for i in range(3)]
    maps = [np.load(pred / f"{k}.npy") for k in keys]
    masks = [np.asarray(Image.open(data / "Toy" / "ground_truth" / f"{k}_mask.png")) > 0 if k.startswith("Burrs")
             else np.zeros((24, 24), bool) for k in keys]
    direct = E.evaluate_pad(maps, masks, [1, 1, 1, 0, 0, 0], config=E.EvaluationConfig(image_size="native", metrics=E.ADER_METRICS))
    for name, value in direct.metrics.items():
        assert summary["classes"]["Toy"]["metrics"][name] == pytest.approx(value, abs=1e-12)


def test_cli_uses_scores_json(tmp_path):
    data, pred = tmp_path / "data", tmp_path / "pred"
    make_mad_tree(data, pred)
    # Scores that rank every good image above every defect: image AUROC must be 0.
    scores = {f"good/{i}": 1.0 + i for i in range(3)} | {f"Burrs/{i}": 0.1 * i for i in range(3)}
    (pred / "scores.json").write_text(json.dumps(scores))
    assert run_cli("--pred", pred, "--data", data, "--class", "Toy", "--image-size", "12") == 0
    summary = json.loads((pred / "evaluation-pad" / "metrics.json").read_text())
    assert summary["classes"]["Toy"]["metrics"]["AUROC_sp"] == 0.0
    assert summary["config"]["image_size"] == [12, 12]


def test_cli_names_missing_predictions(tmp_path, capsys):
    data, pred = tmp_path / "data", tmp_path / "pred"
    make_mad_tree(data, pred)
    (pred / "Burrs" / "1.npy").unlink()
    assert run_cli("--pred", pred, "--data", data, "--class", "Toy") == 2
    error = capsys.readouterr().err
    assert "1 of 6 test images have no prediction" in error and "Burrs/1" in error


def test_cli_names_bad_masks_and_nan_maps(tmp_path, capsys):
    data, pred = tmp_path / "data", tmp_path / "pred"
    make_mad_tree(data, pred)
    np.save(pred / "good" / "2.npy", np.full((24, 24), np.nan, np.float32))
    assert run_cli("--pred", pred, "--data", data, "--class", "Toy") == 2
    assert "good/2.npy has 576 NaN/inf" in capsys.readouterr().err
    make_mad_tree(data, pred)  # restore the map
    soft = np.zeros((24, 24), np.uint8)
    soft[3:9, 3:9] = 200
    write_png(data / "Toy" / "ground_truth" / "Burrs" / "0_mask.png", soft)
    assert run_cli("--pred", pred, "--data", data, "--class", "Toy") == 2
    assert "0_mask.png is not binary" in capsys.readouterr().err


def make_m2ad_predictions(tmp_path, size=8):
    """An M2AD class 'Bird' (5 normal specimens, 1 anomalous with a mask for view 001 only),
    2 views x 3 illuminations each, and maps at half the mask size (the anomalous ones boosted)."""
    folder, pred = tmp_path / "m2ad" / "Bird", tmp_path / "pred"
    rng = np.random.default_rng(0)
    specimens = [("Good", f"{i:03d}") for i in range(5)] + [("NG", "damage_1_001")]
    for kind, specimen in specimens:
        for view in ("001", "002"):
            for illumination in ("01", "02", "03"):
                name = f"V{view}_L{illumination}"
                write_png(folder / kind / specimen / f"{name}.png", np.full((size, size, 3), 128, np.uint8))
                (pred / kind / specimen).mkdir(parents=True, exist_ok=True)
                boost = 0.5 if kind == "NG" else 0.0
                np.save(pred / kind / specimen / f"{name}.npy", (rng.random((size // 2, size // 2)) + boost).astype(np.float32))
    mask = np.zeros((size, size), np.uint8)
    mask[2:4, 2:5] = 255
    write_png(folder / "GT" / "damage_1_001" / "V001_mask.png", mask)
    return tmp_path / "m2ad", pred


@pytest.mark.parametrize("protocol, expected", [("m2ad-invariant", E.ADER_METRICS), ("m2ad-synergy", E.SYNERGY_METRICS)])
def test_cli_m2ad_protocols(tmp_path, capsys, protocol, expected):
    data, pred = make_m2ad_predictions(tmp_path)
    code = run_cli("--pred", pred, "--data", data, "--class", "Bird", "--protocol", protocol, "--fusion", "mul")
    assert code == 0
    assert "resized 18 of 18 anomaly maps bilinearly" in capsys.readouterr().out  # maps are half the mask size
    summary = json.loads((pred / f"evaluation-{protocol}" / "metrics.json").read_text())
    metrics = summary["classes"]["Bird"]["metrics"]
    assert set(metrics) == set(expected)
    if protocol == "m2ad-synergy":
        assert summary["classes"]["Bird"]["counts"]["object_instances"] == 3
        assert metrics["AUROC_obj_sp"] == 1.0  # the anomalous specimen's maps are boosted


def test_cli_several_classes_reports_undefined_and_partial_means(tmp_path, capsys):
    data, pred = tmp_path / "data", tmp_path / "pred"
    make_mad_tree(data, pred / "Toy")
    make_mad_tree(data, pred / "Plain", seed=1)
    (data / "Toy").rename(data / "Plain")  # same files, then give Toy its own copy
    make_mad_tree(data, pred / "Toy")
    for path in (data / "Plain" / "test" / "Burrs").iterdir():  # Plain keeps only good images
        path.unlink()
    (data / "Plain" / "test" / "Burrs").rmdir()
    for path in (pred / "Plain" / "Burrs").iterdir():
        path.unlink()
    assert run_cli("--pred", pred, "--data", data, "--class", "Toy", "Plain", "--image-size", "16") == 0
    table = capsys.readouterr().out
    assert "Plain" in table and "undefined" in table and "undefined in Plain" in table
    summary = json.loads((pred / "evaluation-pad" / "metrics.json").read_text())
    assert summary["classes"]["Plain"]["metrics"]["AUROC_sp"] is None
    assert "no anomalous" in summary["classes"]["Plain"]["undefined"]["AUROC_sp"]
    assert summary["means"]["mAUROC_sp"] == {
        "value": summary["classes"]["Toy"]["metrics"]["AUROC_sp"], "defined_in": ["Toy"], "undefined_in": ["Plain"],
    }
    rows = (pred / "evaluation-pad" / "metrics.csv").read_text().splitlines()
    assert rows[2].startswith("Plain,undefined,undefined") and rows[3].startswith("mean,")


def test_cli_with_several_classes_needs_class_folders(tmp_path, capsys):
    data, pred = tmp_path / "data", tmp_path / "pred"
    make_mad_tree(data, pred)
    assert run_cli("--pred", pred, "--data", data, "--class", "Toy", "Other") == 2
    assert "predictions must be in <pred>/<class>/" in capsys.readouterr().err
