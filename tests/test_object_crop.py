"""Comparing on a crop about the object (``CompareConfig.object_crop``): checked on a textured sphere
whose picture through any camera is known in closed form, so that the crop's render, the query sampled
into it and the map taken back can each be held against the truth."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from omnipose.compare import CompareConfig
from omnipose.core.errors import ConfigError
from omnipose.core.geometry import generate_rays, intrinsics_from_fov, make_intrinsics, pixel_centers, spherical_pose
from omnipose.detector.detector import in_query_frame
from omnipose.detector.references import QueryView, make_reference
from omnipose.pose.query import zoom_affine

SIZE = 96
K = intrinsics_from_fov(math.radians(40.0), SIZE, SIZE)


def sphere_render(c2w: torch.Tensor, camera: torch.Tensor | None = None, size: tuple[int, int] | None = None) -> dict:
    """A unit sphere at the origin with a smooth colour pattern, on white, as the field's render_at gives it."""
    camera = K if camera is None else camera
    width, height = (SIZE, SIZE) if size is None else size
    origins, directions = generate_rays(c2w, camera, pixel_centers(height, width))
    along = -(origins * directions).sum(-1)
    closest = (origins + directions * along[:, None]).norm(dim=-1)
    hit = (closest < 1.0) & (along > 0)
    depth = torch.where(hit, along - torch.sqrt((1.0 - closest**2).clamp_min(0.0)), torch.zeros_like(along))
    x, y, z = (origins + directions * depth[:, None]).unbind(-1)
    colour = torch.stack([0.5 + 0.4 * torch.sin(3 * x), 0.5 + 0.4 * torch.cos(2 * y), 0.5 + 0.3 * torch.sin(2 * z)], -1)
    rgb = torch.where(hit[:, None], colour, torch.ones_like(colour))
    return {"rgb": rgb.reshape(height, width, 3), "opacity": hit.float().reshape(height, width),
            "depth": depth.reshape(height, width)}  # fmt: skip


def longer_lens(factor: float) -> torch.Tensor:
    """K with the focal length ``factor`` times longer, about the same centre."""
    return make_intrinsics(factor * float(K[0, 0]), factor * float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))


def crop_reference(c2w: torch.Tensor, margin: float = 0.1):
    return make_reference(sphere_render, None, c2w, 0, 0.02, crop_margin=margin, frame=(K, SIZE, SIZE))


def inside(opacity: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Pixels of the object at least ``radius`` pixels from its outline (bilinear sampling blends the outline)."""
    off = torch.nn.functional.max_pool2d((1 - opacity)[None, None], 2 * radius + 1, 1, radius)[0, 0]
    return off < 0.5


def test_a_small_object_is_rendered_on_a_crop_that_frames_it_and_the_query_is_sampled_to_match():
    c2w = spherical_pose(math.radians(30.0), math.radians(20.0), 10.0)  # about 26 of 96 pixels across
    whole = sphere_render(c2w)
    reference = crop_reference(c2w)
    assert reference.crop is not None and reference.image.shape == (SIZE, SIZE, 3)
    opacity = reference.alpha[0]
    cols = torch.nonzero(opacity.amax(0) > 0.5)[:, 0]
    assert float(opacity[[0, -1]].amax()) == 0 and float(opacity[:, [0, -1]].amax()) == 0  # the whole object is in it
    assert 0.6 * SIZE < int(cols.max() - cols.min() + 1) < SIZE  # about 2.6 times as many pixels across
    # The render through the crop's camera is the whole frame's picture, magnified.
    query = QueryView(whole["rgb"].numpy()).in_frame(reference)
    error = (query - reference.image).abs().amax(-1)[inside(opacity)]
    assert float(error.mean()) < 0.02 and float(error.max()) < 0.1
    assert float(opacity.mean()) > 4 * float(whole["opacity"].mean())


def test_a_query_taken_with_a_longer_lens_is_cropped_from_its_own_pixels():
    c2w = spherical_pose(math.radians(-40.0), math.radians(35.0), 10.0)
    own = sphere_render(c2w, longer_lens(1.6))
    zoom = 1 / 1.6  # what prepare_query scales it by about its centre, to the model's lens
    to_image = zoom_affine(zoom, SIZE, SIZE)
    model_frame = sphere_render(c2w)["rgb"].numpy()
    reference = crop_reference(c2w)
    right = QueryView(model_frame, own=own["rgb"].numpy(), to_image=to_image).in_frame(reference)
    wrong = QueryView(model_frame, own=own["rgb"].numpy()).in_frame(reference)  # the lens left out
    where = inside(reference.alpha[0])
    assert float((right - reference.image).abs().amax(-1)[where].mean()) < 0.02
    assert float((wrong - reference.image).abs().amax(-1)[where].mean()) > 0.1


def test_the_map_compared_on_the_crop_lands_back_over_the_object_in_the_query_frame():
    c2w = spherical_pose(math.radians(70.0), math.radians(-10.0), 10.0)
    focal = 1.6 * float(K[0, 0])
    own = sphere_render(c2w, longer_lens(1.6))
    reference = crop_reference(c2w)
    info = SimpleNamespace(K=K, width=SIZE, height=SIZE, background=(1.0, 1.0, 1.0), train_image_paths=[])
    detector = SimpleNamespace(info=info, config=SimpleNamespace(query_focal=focal))
    notes: list[str] = []
    anomaly_map, image = in_query_frame(reference.alpha[0].numpy(), reference.image.numpy(), own["rgb"].numpy(), detector,
                                        notes, reference.crop)  # fmt: skip
    assert anomaly_map.shape == (SIZE, SIZE) and image.shape == (SIZE, SIZE, 3) and notes
    truth, back = own["opacity"].numpy() > 0.5, anomaly_map > 0.5
    assert (truth & back).sum() / (truth | back).sum() > 0.9


def test_an_object_that_fills_the_frame_or_is_not_seen_is_compared_on_the_whole_frame():
    near = spherical_pose(0.0, math.radians(20.0), 3.0)  # 93 of 96 pixels across
    assert crop_reference(near).crop is None
    assert torch.equal(crop_reference(near).image, sphere_render(near)["rgb"])
    away = spherical_pose(0.0, math.radians(20.0), 10.0) @ torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    assert crop_reference(away).crop is None  # looking away: nothing opaque
    assert crop_reference(spherical_pose(0.0, 0.0, 10.0), margin=0.0).crop is None  # 0: off


def test_the_crop_margin_must_be_a_share_of_the_object():
    with pytest.raises(ConfigError, match="object_crop"):
        CompareConfig(object_crop=1.5)
    assert CompareConfig().object_crop == 0.0


def test_a_tiny_object_is_magnified_at_most_four_times():
    c2w = spherical_pose(0.0, 0.0, 30.0)  # about 9 pixels across
    reference = crop_reference(c2w)
    assert reference.crop is not None and math.isclose(float(reference.crop[0, 0]), 4.0, rel_tol=1e-6)
    assert np.isfinite(reference.image.numpy()).all()
