"""``scripts/bench_replay.py``: comparison variants replayed on a ``bench_detect.py --dump``."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from bench_replay import main, parse_variant  # noqa: E402

SIZE = 64


def _object(rng: np.random.Generator) -> np.ndarray:
    """A textured orange disc on white, (SIZE, SIZE, 3) in [0, 1]."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    disc = (yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2 < (SIZE / 3) ** 2
    image = np.ones((SIZE, SIZE, 3), np.float32)
    texture = 0.1 * np.sin(xx / 2.0) * np.cos(yy / 3.0)
    image[disc] = np.array([0.9, 0.5, 0.2]) + texture[disc, None] + rng.normal(0, 0.01, (disc.sum(), 3))
    return image.clip(0, 1)


def _render(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A field's render of it: the same, a little noisy."""
    on = np.abs(image - 1).max(-1) > 0.05
    render = image.copy()
    render[on] += rng.normal(0, 0.02, (on.sum(), 3))
    return render.clip(0, 1)


def _reference(image: np.ndarray) -> tuple:
    """A dumped candidate: (c2w, render, alpha (1, H, W), neighbours (0, H, W, 3), unseen)."""
    alpha = torch.from_numpy((np.abs(image - 1).max(-1) > 0.05).astype(np.float32))[None]
    return torch.eye(4), torch.from_numpy(image).half(), alpha.half(), torch.zeros(0, SIZE, SIZE, 3).half(), None


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    """A dump of 8 normal pairs, 4 normal queries and 4 with a dark stain (mask = the stain)."""
    rng = np.random.default_rng(0)
    views = [_object(rng) for _ in range(8)]
    renders = [_render(v, rng) for v in views]
    alphas = [torch.from_numpy((np.abs(r - 1).max(-1) > 0.05).astype(np.float32)) for r in renders]
    queries = []
    for n in range(8):
        image, mask = _object(rng), np.zeros((SIZE, SIZE), bool)
        if n % 2:
            mask[28 + n // 2: 36 + n // 2, 24:32] = True
            image[mask] = [0.3, 0.3, 0.6]
        queries.append({"name": f"{'stain' if n % 2 else 'good'}/{n}", "image": torch.from_numpy(image).half(),
                        "mask": torch.from_numpy(mask), "anomalous": bool(n % 2),
                        "candidates": [_reference(_render(_object(rng), rng))], "true_c2w": None, "truth": None})  # fmt: skip
    pairs = (torch.from_numpy(np.stack(views)).half(), torch.from_numpy(np.stack(renders)).half(),
             torch.stack(alphas).half(), None)  # fmt: skip
    folder = tmp_path_factory.mktemp("dump")
    torch.save({"queries": queries, "normal_pairs": pairs}, folder / "disc.pt")
    return folder


def test_the_replay_ranks_the_stains_above_the_normal_views_in_every_variant(dump, tmp_path, capsys):
    out = tmp_path / "replay.json"
    assert main([str(dump), "--threads", "1", "--variant", 'colour_only={"structure_weight": 0, "feature_weight": 0}',
                 "--out", str(out)]) == 0  # fmt: skip
    record = json.loads(out.read_text())
    assert list(record["rows"]) == ["default", "colour_only"]
    for name, classes in record["rows"].items():
        disc = classes["disc"]
        assert disc["metrics"]["AUROC_sp"] == pytest.approx(100.0), name
        assert disc["metrics"]["AUROC_px"] > 95, name
        assert len(disc["scores"]) == 8 and [n for n, _ in disc["lowest_defective"]][0].startswith("stain")
    # The variant changes the comparison, so the scores differ between rows.
    assert record["rows"]["default"]["disc"]["scores"] != record["rows"]["colour_only"]["disc"]["scores"]
    assert "colour_only" in capsys.readouterr().out


def test_a_variant_naming_no_comparison_setting_or_no_dump_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="unknown: \\['colour_weight'\\]"):
        parse_variant('x={"colour_weight": 2}')
    with pytest.raises(SystemExit, match="NAME="):
        parse_variant('{"color_weight": 2}')
    assert parse_variant('x={"feature_layers": [4, 8]}') == ("x", {"feature_layers": (4, 8)})
    with pytest.raises(SystemExit, match="no dump there"):
        main([str(tmp_path)])
