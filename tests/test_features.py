"""EfficientNet features: ImageNet sanity of the shipped weights, loading by path, clear errors."""

import pytest
import torch
import torch.nn.functional as F

from omnipose.compare import (
    EfficientNet,
    FeatureExtractor,
    SameConv2d,
    WeightsError,
    load_efficientnet,
    spec_from_name,
    spec_from_state_dict,
)
from omnipose.core.image import read_image_rgb

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


def _photo(name: str, size: int = 224) -> torch.Tensor:
    """A scikit-image sample photograph as (1, 3, size, size) in [0, 1]."""
    from skimage import data

    image = torch.from_numpy(getattr(data, name)()[..., :3].copy()).float().permute(2, 0, 1)[None] / 255.0
    return F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@pytest.fixture(scope="module")
def lite0() -> FeatureExtractor:
    return FeatureExtractor("efficientnet-lite0", layers=(4, 8, 16), device="cpu")


@pytest.mark.parametrize("name", ["efficientnet-lite0", "lite2"])
def test_shipped_weights_recognise_imagenet_photos(name):
    extractor = FeatureExtractor(name, device="cpu")
    logits = extractor.classify(torch.cat([_photo("chelsea"), _photo("coffee")]))
    top5 = logits.topk(5, dim=1).indices.tolist()
    assert CAT_CLASSES & set(top5[0]), f"chelsea (a cat) got top-5 classes {top5[0]}"
    assert COFFEE_CLASSES & set(top5[1]), f"coffee got top-5 classes {top5[1]}"
    # The top class should be confident, not a lucky draw from a flat distribution.
    assert logits.softmax(1).amax(1).min() > 0.5


def test_lite_input_scaling_beats_imagenet_statistics(lite0):
    """Lite weights come from TF-Lite (inputs scaled to [-1, 1]); ImageNet mean/std fits them worse."""
    photos = torch.cat([_photo("chelsea"), _photo("coffee")])
    targets = torch.tensor([285, 967])  # Egyptian cat, espresso: the top classes of both photos
    ours = F.cross_entropy(lite0.classify(photos), targets)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        imagenet = F.cross_entropy(
            lite0.network(((photos - mean) / std).contiguous(memory_format=torch.channels_last)), targets
        )
    assert ours < imagenet


def test_feature_maps_have_the_requested_strides(lite0):
    images = torch.rand(2, 3, 200, 200)
    features = lite0(images)
    assert [tuple(f.shape) for f in features] == [(2, 24, 50, 50), (2, 40, 25, 25), (2, 112, 13, 13)]
    assert lite0.channels == [24, 40, 112]
    assert all(f.device == lite0.device and f.dtype == torch.float32 for f in features)


def test_features_of_a_real_view_respond_to_content(lite0, lego_dir):
    view = torch.from_numpy(read_image_rgb(lego_dir / "train" / "r_0.png", size=(200, 200))).permute(2, 0, 1)[None]
    blank = torch.ones_like(view)
    stride8_view, stride8_blank = lite0(view)[1], lite0(blank)[1]
    change = (stride8_view - stride8_blank).norm(dim=1)[0]  # (25, 25)
    # Cells of pure white background far from the object (8-pixel cells, grown by one cell).
    white = F.max_pool2d((view.amin(1, keepdim=True) < 0.98).float(), 8, ceil_mode=True)
    near_object = F.max_pool2d(white, 3, stride=1, padding=1)[0, 0] > 0
    on_object = white[0, 0] > 0
    # The features see the object; where the view is blank background they match a blank frame.
    assert change[on_object].mean() > 4 * change[~near_object].mean()


def test_stride_two_convolutions_pad_like_tensorflow_same():
    """TF 'SAME': the odd padding pixel goes to the bottom/right, as the weights were trained with."""
    image = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    conv = SameConv2d(1, 1, 3, stride=2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 1.0  # picks the top-left pixel of each window
    # total padding (2 - 1) * 2 + 3 - 4 = 1, all of it after: windows start at rows/cols 0 and 2
    assert conv(image)[0, 0].tolist() == [[1.0, 3.0], [9.0, 11.0]]
    wide = SameConv2d(1, 1, 5, stride=2)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[0, 0, 0, 0] = 1.0
    # 8 -> 4 with a 5x5 kernel: total padding 3, one before and two after
    out = wide(torch.arange(1.0, 65.0).view(1, 1, 8, 8))[0, 0]
    assert out.shape == (4, 4) and out[0, 0] == 0.0 and out[1, 1] == 10.0


def test_unknown_stride_is_a_clear_error():
    with pytest.raises(WeightsError, match=r"stride 3.*strides \[2, 4, 8, 16, 32\]"):
        FeatureExtractor("efficientnet-lite0", layers=(3,), device="cpu")


def test_architecture_from_shapes_matches_the_published_scaling():
    for name in ("efficientnet-lite0", "efficientnet-lite2"):
        extractor_net = load_efficientnet(name)
        assert extractor_net.spec == spec_from_name(name)
    b4 = spec_from_name("efficientnet-b4")
    assert (len(b4.blocks), b4.stem_channels, b4.head_channels, b4.blocks[-1].out_channels) == (32, 48, 1792, 448)
    assert all(block.squeeze_channels > 0 for block in b4.blocks) and not b4.lite
    b0 = spec_from_name("b0")
    assert (len(b0.blocks), b0.head_channels) == (16, 1280)


def test_fused_batchnorm_gives_the_same_features(lite0):
    plain = load_efficientnet("efficientnet-lite0")
    images = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        reference = plain.forward_features(lite0.normalize(images).contiguous(), (4, 8, 16))
    for ours, expected in zip(lite0(images), reference):
        torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


def test_own_state_dict_reloads_by_path(tmp_path, lite0):
    path = tmp_path / "lite0.pth"
    torch.save(load_efficientnet("efficientnet-lite0").state_dict(), path)
    reloaded = FeatureExtractor(path, layers=(4, 8, 16), device="cpu", variant="lite0")
    images = torch.rand(1, 3, 64, 80)
    for ours, expected in zip(reloaded(images), lite0(images)):
        torch.testing.assert_close(ours, expected)
    # A checkpoint wrapper and DataParallel's 'module.' prefix are unwrapped.
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in torch.load(path).items()}}, wrapped)
    assert load_efficientnet(wrapped).spec == spec_from_name("lite0")


def test_lukemelas_b4_layout_loads_with_squeeze_excitation(tmp_path):
    """A B4 state dict in the efficientnet_pytorch layout (what PAD uses) loads, named or not."""
    torch.manual_seed(0)
    model = EfficientNet(spec_from_name("efficientnet-b4"))
    state = model.state_dict()
    assert "_blocks.0._se_reduce.weight" in state and "_blocks.31._project_conv.weight" in state
    path = tmp_path / "efficientnet-b4.pth"
    torch.save(state, path)
    extractor = FeatureExtractor(path, layers=(4, 8, 16, 32), device="cpu", variant="efficientnet-b4")
    assert extractor.channels == [32, 56, 160, 448]
    assert [tuple(f.shape[-2:]) for f in extractor(torch.rand(1, 3, 64, 64))] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    with pytest.raises(WeightsError, match="does not hold efficientnet-b3"):
        load_efficientnet(path, variant="efficientnet-b3")


def test_wrong_files_give_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_efficientnet(tmp_path / "absent.pth")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        load_efficientnet(text)
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512)}, foreign)
    with pytest.raises(WeightsError, match="_conv_stem.weight"):
        load_efficientnet(foreign)

    state = load_efficientnet("efficientnet-lite0").state_dict()
    incomplete = dict(state)
    del incomplete["_blocks.3._bn1.running_var"]
    torch.save(incomplete, tmp_path / "incomplete.pth")
    with pytest.raises(WeightsError, match=r"_blocks\.3\._bn1\.running_var"):
        load_efficientnet(tmp_path / "incomplete.pth")
    extra = dict(state, **{"_blocks.0._surprise.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match="_surprise"):
        load_efficientnet(tmp_path / "extra.pth")


def test_names_without_shipped_weights_point_to_a_path():
    with pytest.raises(WeightsError, match="pass its path"):
        FeatureExtractor("efficientnet-b4", device="cpu")
    with pytest.raises(WeightsError, match="unknown EfficientNet variant"):
        FeatureExtractor("resnet50", device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(lite0):
    gpu = FeatureExtractor("efficientnet-lite0", layers=(4, 8, 16), device="cuda")
    images = torch.rand(1, 3, 128, 128)
    for on_gpu, on_cpu in zip(gpu(images), lite0(images)):
        assert on_gpu.is_cuda
        torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-3, rtol=1e-3)


def test_spec_from_state_dict_rejects_partial_networks():
    state = load_efficientnet("efficientnet-lite0").state_dict()
    last_two_stages = tuple(f"_blocks.{i}." for i in range(11, 16))
    truncated = {k: v for k, v in state.items() if not k.startswith(last_two_stages)}
    with pytest.raises(WeightsError, match="has 5 stages, expected 7"):
        spec_from_state_dict(truncated)
