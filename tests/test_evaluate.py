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

from omnipose.cli.evaluate import add_evaluate_arguments, run_evaluate
from omnipose.data import M2adImage
from omnipose.evaluation import metrics as M
from omnipose.evaluation.config import ADER_METRICS, PAD_METRICS, SYNERGY_METRICS, EvaluationConfig
from omnipose.evaluation.figures import save_panel
from omnipose.evaluation.inputs import resize_nearest
from omnipose.evaluation.protocols import (
    evaluate_m2ad_invariant,
    evaluate_m2ad_synergy,
    evaluate_pad,
    fuse_maps,
    fuse_scores,
)
from omnipose.evaluation.results import ClassResult, class_means
from omnipose.evaluation.tables import csv_text, format_table, markdown_table, results_to_dict


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def torch_resize(image, size):
    return torch.nn.functional.interpolate(torch.from_numpy(image)[None, None], size=size, mode="bilinear",
                                           align_corners=False)[0, 0].numpy()


# ----------------------------------------------------------------------------- fusion
def test_fuse_scores_add_is_mean_and_mul_is_geometric_mean():
    assert fuse_scores([1.0, 4.0], "add") == pytest.approx(2.5)
    assert fuse_scores([1.0, 4.0], "mul") == pytest.approx(2.0)
    assert fuse_scores([2.0, 8.0, 4.0], "mul") == pytest.approx(4.0)
    with pytest.raises(M.MetricInputError, match="NG/002 view 001 has"):
        fuse_scores([-1.0, 4.0], "mul", "NG/002 view 001")


@pytest.mark.parametrize("source, target", [((40, 40), (16, 16)), ((7, 13), (20, 9)), ((400, 400), (224, 224))])
def test_resize_nearest_equals_pil(source, target):
    mask = (np.random.default_rng(0).random(source) > 0.5).astype(np.uint8) * 255
    expected = np.asarray(Image.fromarray(mask).resize(target[::-1], Image.NEAREST))
    np.testing.assert_array_equal(resize_nearest(mask, target), expected)


def test_fuse_maps_pixelwise_and_without_float32_underflow():
    maps = [np.array([[1.0, 2.0]], np.float32), np.array([[4.0, 8.0]], np.float32)]
    np.testing.assert_allclose(fuse_maps(maps, "add"), [[2.5, 5.0]])
    np.testing.assert_allclose(fuse_maps(maps, "mul"), [[2.0, 4.0]], rtol=1e-6)
    tiny = [np.full((1, 2), 1e-5, np.float32) * [1, 2] for _ in range(10)]  # float32 product: 1e-50 -> 0
    fused = fuse_maps([t.astype(np.float32) for t in tiny], "mul")
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
    add = evaluate_m2ad_synergy(images, maps, masks, scores, EvaluationConfig(fusion="add"))
    mul = evaluate_m2ad_synergy(images, maps, masks, scores, EvaluationConfig(fusion="mul"))
    # Objects: NG/002 fuses to 0.5 ('add') or sqrt(0.1 * 0.9) = 0.3 ('mul') against normals 0.45 and 0.2.
    assert add.metrics["AUROC_obj_sp"] == pytest.approx(1.0)
    assert mul.metrics["AUROC_obj_sp"] == pytest.approx(0.5)
    # Views: only NG/002 view 001 has mask pixels (view 002 is normal at view level).
    # 'add': 0.5 vs [0.45, 0.45, 0.2, 0.2, 0.5] -> (4 + 1/2) / 5; 'mul': 0.3 vs [.., 0.3] -> (2 + 1/2) / 5.
    assert add.metrics["AUROC_view_sp"] == pytest.approx(0.9)
    assert mul.metrics["AUROC_view_sp"] == pytest.approx(0.5)
    assert add.counts["view_instances"] == 6 and add.counts["object_instances"] == 3
    assert add.counts["view_anomalous_pixels"] == 2  # the fused mask is the union of both illuminations
    assert set(add.metrics) == set(SYNERGY_METRICS)


def test_synergy_view_pixel_metrics_use_fused_maps():
    images, maps, masks, scores = synergy_case()
    for fusion in ("add", "mul"):
        result = evaluate_m2ad_synergy(images, maps, masks, scores, EvaluationConfig(fusion=fusion))
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
    config = EvaluationConfig(image_size=(16, 16), gaussian_sigma=1.0)
    with pytest.warns(M.MapResizedWarning):
        result = evaluate_pad(maps, masks, labels, config=config)
    expected_maps = np.stack([gaussian_filter(torch_resize(m, (16, 16)), sigma=1.0) for m in maps])
    expected_maps = (expected_maps - expected_maps.min()) / (expected_maps.max() - expected_maps.min())
    expected_masks = np.stack([np.asarray(Image.fromarray(m).resize((16, 16), Image.NEAREST)) for m in masks])
    assert result.metrics["AUROC_px"] == pytest.approx(roc_auc_score(expected_masks.ravel(), expected_maps.ravel()), abs=1e-6)
    assert result.metrics["AUROC_sp"] == pytest.approx(roc_auc_score(labels, expected_maps.max(axis=(1, 2))), abs=1e-6)
    assert set(result.metrics) == set(PAD_METRICS)
    assert any("empty mask" in note for note in result.notes)


def test_invariant_labels_images_by_their_masks():
    rng = np.random.default_rng(1)
    masks = np.zeros((5, 12, 12), bool)
    masks[3, 2:5, 2:6] = masks[4, 7:9, 1:3] = True
    maps = (rng.random((5, 12, 12)) + masks * 0.5).astype(np.float32)
    result = evaluate_m2ad_invariant(list(maps), list(masks))
    labels = masks.any(axis=(1, 2))
    assert result.metrics["AUROC_sp"] == pytest.approx(roc_auc_score(labels, maps.max(axis=(1, 2))))
    assert result.metrics["AP_px"] == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()))
    assert set(result.metrics) == set(ADER_METRICS)


def test_config_defaults_and_unknown_metrics():
    assert EvaluationConfig().resolved().image_size == (224, 224)
    assert EvaluationConfig().resolved().gaussian_sigma == 4.0
    invariant = EvaluationConfig(protocol="m2ad-invariant").resolved()
    assert invariant.shape is None and invariant.gaussian_sigma == 0.0 and invariant.metrics == ADER_METRICS
    assert invariant.resolved() == invariant  # resolving twice changes nothing
    with pytest.raises(ValueError, match="AUPRO_view"):
        EvaluationConfig(protocol="pad", metrics=("AUPRO_view",)).resolved()


# ----------------------------------------------------------------------------- means and tables
def test_class_means_skip_and_name_undefined_classes():
    results = [
        ClassResult("A", "pad", {"AUROC_sp": 0.8, "AUROC_px": 0.9}, {}),
        ClassResult("B", "pad", {"AUROC_sp": M.Undefined("no anomalous images"), "AUROC_px": 0.7}, {}),
    ]
    means = class_means(results)
    assert means["mAUROC_sp"].value == pytest.approx(0.8) and means["mAUROC_sp"].undefined_in == ("B",)
    assert means["mAUROC_px"].value == pytest.approx(0.8) and means["mAUROC_px"].undefined_in == ()
    table = format_table(results)
    assert "undefined" in table and "80.00*" in table and "undefined in B" in table
    assert "undefined" in csv_text(results) and "| B | undefined | 70.00 |" in markdown_table(results)
    summary = results_to_dict(results)
    assert summary["classes"]["B"]["metrics"]["AUROC_sp"] is None
    assert summary["classes"]["B"]["undefined"]["AUROC_sp"] == "no anomalous images"
    only_undefined = class_means(results[1:])["mAUROC_sp"].value
    assert isinstance(only_undefined, M.Undefined)


def test_save_panel_writes_a_five_column_png(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((32, 32, 3))
    path = save_panel(tmp_path / "p.png", image, None, np.eye(16, dtype=bool), rng.random((16, 16)), 0.5)
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
    parser = add_evaluate_arguments(argparse.ArgumentParser())
    return run_evaluate(parser.parse_args([str(a) for a in argv]))


def test_cli_pad_writes_tables_and_figures(tmp_path, capsys):
    data, pred, out = tmp_path / "data", tmp_path / "pred", tmp_path / "out"
    make_mad_tree(data, pred)
    code = run_cli("--pred", pred, "--data", data, "--class", "Toy", "--out", out, "--image-size", "native",
                   "--metrics", ",".join(ADER_METRICS), "--panels", "1")
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
    direct = evaluate_pad(maps, masks, [1, 1, 1, 0, 0, 0], config=EvaluationConfig(image_size="native", metrics=ADER_METRICS))
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


@pytest.mark.parametrize("protocol, expected", [("m2ad-invariant", ADER_METRICS), ("m2ad-synergy", SYNERGY_METRICS)])
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


# ----------------------------------------------------------------------------- configs, the one image-score name, the runner's record
@pytest.mark.parametrize("field, value", [
    ("protocol", "mad"), ("fusion", "max"), ("image_size", (0, 224)), ("image_size", "full"), ("image_size", (224,)),
    ("gaussian_sigma", -1.0), ("gaussian_sigma", float("nan")), ("metrics", ("AUROC_sp", "IoU")), ("metrics", "AUROC_sp"),
    ("score_method", "median"),
])  # fmt: skip
def test_evaluation_config_refuses_nonsense_naming_the_field(field, value):
    from omnipose.core.errors import ConfigError

    with pytest.raises(ConfigError, match=f"EvaluationConfig.{field}"):
        EvaluationConfig(**{field: value})


def test_evaluation_config_round_trips_and_reads_the_metrics_json_it_wrote():
    config = EvaluationConfig(protocol="m2ad-synergy", image_size=(32, 48), fusion="mul").resolved()
    assert EvaluationConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert EvaluationConfig.from_dict(results_to_dict([], config)["config"]) == config


@pytest.mark.parametrize("field, value", [("classes", ()), ("classes", ("01Robot", "99Unicorn")), ("size", 0),
                                          ("steps", -5), ("minutes", 0.0), ("test_views_per_type", -1)])
def test_demo_config_refuses_nonsense_naming_the_field(field, value):
    from omnipose.core.errors import ConfigError
    from omnipose.evaluation import DemoConfig

    with pytest.raises(ConfigError, match=f"DemoConfig.{field}"):
        DemoConfig(**{field: value})


def test_topk_and_topk_mean_are_one_image_score():
    anomaly_map = np.arange(100, dtype=np.float32).reshape(10, 10)
    assert M.image_score_from_map(anomaly_map, "topk", 0.05) == M.image_score_from_map(anomaly_map, "topk_mean", 0.05) == 97.0
    assert EvaluationConfig(score_method="topk").resolved().score_method == "topk_mean"  # one spelling from here on
    with pytest.raises(ValueError, match="use 'max' or 'topk_mean'"):
        M.image_score_from_map(anomaly_map, "mean")
    maps = [anomaly_map, anomaly_map[::-1]]
    masks = [np.zeros((10, 10), bool), np.eye(10, dtype=bool)]
    by_alias = evaluate_m2ad_invariant(maps, masks, config=EvaluationConfig(score_method="topk_mean"))
    assert by_alias.metrics == evaluate_m2ad_invariant(maps, masks, config=EvaluationConfig(score_method="topk")).metrics


def test_cli_accepts_both_spellings_of_the_topk_score(tmp_path):
    data, pred = tmp_path / "data", tmp_path / "pred"
    make_mad_tree(data, pred)
    for spelling in ("topk", "topk_mean"):
        assert run_cli("--pred", pred, "--data", data, "--class", "Toy", "--score-method", spelling, "--out", tmp_path / spelling) == 0
    first, second = (json.loads((tmp_path / s / "metrics.json").read_text()) for s in ("topk", "topk_mean"))
    assert first == second and first["config"]["score_method"] == "topk_mean"


def test_invariant_and_pad_share_one_path_to_their_metrics():
    """PAD and M2AD-Invariant differ only in labels and normalisation: on normalised maps with
    labels from the masks they give the same numbers."""
    rng = np.random.default_rng(4)
    masks = np.zeros((4, 12, 12), bool)
    masks[2, 2:6, 3:7] = masks[3, 6:9, 1:4] = True
    maps = rng.random((4, 12, 12)).astype(np.float32) + masks * 0.3
    maps = (maps - maps.min()) / (maps.max() - maps.min())
    config = EvaluationConfig(image_size="native", gaussian_sigma=0.0, metrics=ADER_METRICS)
    pad = evaluate_pad(list(maps), list(masks), masks.any(axis=(1, 2)), config=config)
    invariant = evaluate_m2ad_invariant(list(maps), list(masks), config=config)
    assert pad.metrics == invariant.metrics and pad.pixel_threshold == invariant.pixel_threshold


def test_save_run_config_writes_both_configs_atomically(tmp_path):
    from omnipose.core.config import to_dict
    from omnipose.detector import DetectorConfig
    from omnipose.evaluation.runner import save_run_config

    detector = DetectorConfig(image_size=96, dataset="synth")
    path = save_run_config(tmp_path / "01Robot", detector, EvaluationConfig(gaussian_sigma=0.0))
    assert path == tmp_path / "01Robot" / "config.json"
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temporary file left behind
    saved = json.loads(path.read_text())
    assert saved["detector"] == json.loads(json.dumps(to_dict(detector)))
    assert saved["evaluation"]["image_size"] == [224, 224] and saved["evaluation"]["metrics"] == list(PAD_METRICS)
    assert EvaluationConfig.from_dict(saved["evaluation"]) == EvaluationConfig(gaussian_sigma=0.0).resolved()
    assert json.loads(save_run_config(tmp_path, detector).read_text())["evaluation"] is None


def test_finished_keys_need_the_map_and_the_record_written_last(tmp_path):
    from omnipose.evaluation.predictions import finished_keys

    (tmp_path / "good").mkdir()
    np.save(tmp_path / "good" / "0.npy", np.zeros((2, 2)))
    (tmp_path / "good" / "0.json").write_text("{}")
    np.save(tmp_path / "good" / "1.npy", np.zeros((2, 2)))  # interrupted before its record
    assert finished_keys(tmp_path, ["good/0", "good/1", "good/2"]) == ["good/0"]


OLD_NAMES = {
    "omnipose.evaluate": (
        "PROTOCOLS FUSION_RULES PAD_METRICS ADER_METRICS SYNERGY_METRICS PAD_IMAGE_SIZE PAD_GAUSSIAN_SIGMA NATIVE_SIZE "
        "SCORES_FILE PredictionError EvaluationConfig PanelExample ClassResult ClassMean resize_nearest fuse_scores "
        "fuse_maps evaluate_pad evaluate_m2ad_invariant evaluate_m2ad_synergy read_anomaly_map read_scores_file "
        "evaluate_prediction_dir class_means format_table markdown_table csv_text results_to_dict save_curves save_panel "
        "write_report add_evaluate_arguments run_evaluate main"
    ),
    "omnipose.metrics": (
        "IMAGE_METRICS PIXEL_METRICS UNDEFINED_TEXT F1_PIXEL_THRESHOLDS F1_PIXEL_EPS EIGHT_CONNECTED MetricInputError "
        "MapResizedWarning Undefined is_defined format_metric RankedScores score_dtype as_bool_labels check_finite "
        "rank_scores resize_bilinear warn_resized rank_pixels auroc_ranked average_precision_ranked f1_max_ranked "
        "best_f1_threshold pixel_f1_max_ranked aupro_curve aupro_ranked auroc average_precision f1_max pixel_auroc "
        "pixel_average_precision pixel_f1_max aupro image_metrics image_metrics_ranked pixel_metrics "
        "pixel_metrics_ranked curve_points image_score_from_map"
    ),
    "omnipose.demo": "DEMO_EVALUATION run_pipeline write_demo_report add_demo_arguments run_demo",
    "omnipose.original": "parse_value read_pad_config DEFAULT_DATA_DIR ORIGINAL_EVALUATION detector_config_from_pad "
                         "anomaly_nerf_lego auroc_test",
}


@pytest.mark.parametrize("old_module", sorted(OLD_NAMES))
def test_every_name_of_the_old_modules_still_resolves(old_module):
    import importlib

    module = importlib.import_module(old_module)
    missing = [name for name in OLD_NAMES[old_module].split() if not hasattr(module, name)]
    assert not missing, f"{old_module} lost {missing}"


def test_the_package_keeps_its_names_including_the_original_commands():
    import omnipose.original as old

    import omnipose.evaluation as evaluation
    from omnipose.cli.original import anomaly_nerf_lego, auroc_test

    assert old.anomaly_nerf_lego is anomaly_nerf_lego and old.auroc_test is auroc_test  # 0.1's path
    assert all(hasattr(evaluation, name) for name in evaluation.__all__)
