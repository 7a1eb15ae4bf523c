"""Training views re-projected to another pose through depth: checked on a textured plane whose
depth and appearance are known in closed form from every camera."""
import math

import torch

from omnipose.compare import NormalViews, neighbour_references
from omnipose.core.geometry import generate_rays, intrinsics_from_fov, look_at, pixel_centers

SIZE = 96
K = intrinsics_from_fov(math.radians(40.0), SIZE, SIZE)


def texture(points: torch.Tensor) -> torch.Tensor:
    """A smooth colour pattern on the plane z = 0. points: (P, 3). Returns (P, 3) in [0, 1]."""
    x, y = points[:, 0], points[:, 1]
    return torch.stack([0.5 + 0.4 * torch.sin(3 * x), 0.5 + 0.4 * torch.cos(2 * y), 0.5 + 0.3 * torch.sin(2 * (x + y))], -1)


def photograph(eye) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The plane seen from eye, looking at the origin: c2w (4, 4), image (H, W, 3), depth (H, W)."""
    c2w = look_at(torch.tensor(eye), torch.zeros(3), up=torch.tensor([0.0, 1.0, 0.0]))
    origins, directions = generate_rays(c2w, K, pixel_centers(SIZE, SIZE))
    depth = -origins[:, 2] / directions[:, 2]  # along the unit ray to z = 0
    image = texture(origins + directions * depth[:, None])
    return c2w, image.reshape(SIZE, SIZE, 3), depth.reshape(SIZE, SIZE)


def views_from(*eyes) -> NormalViews:
    shots = [photograph(eye) for eye in eyes]
    return NormalViews(torch.stack([s[1] for s in shots]), torch.stack([s[2] for s in shots]),
                       torch.stack([s[0] for s in shots]), K)  # fmt: skip


def test_a_view_re_projected_to_another_pose_shows_what_that_pose_sees():
    c2w, image, depth = photograph((0.3, -0.2, 3.0))
    views = views_from((-0.5, 0.4, 2.8))
    render = torch.zeros(SIZE, SIZE, 3)  # the fallback: shows wherever the view was not used
    moved = neighbour_references(views, c2w, depth, torch.ones(SIZE, SIZE), render, count=1)
    assert moved.shape == (1, SIZE, SIZE, 3)
    used = moved[0].abs().sum(-1) > 0
    assert float(used.float().mean()) > 0.8  # the other camera frames most of this view's plane
    error = (moved[0] - image).abs().amax(-1)[used]
    assert float(error.max()) < 0.03 and float(error.mean()) < 0.005  # bilinear sampling of a smooth texture


def test_points_a_view_does_not_see_fall_back_to_the_render():
    c2w, image, depth = photograph((0.3, -0.2, 3.0))
    views = views_from((-0.5, 0.4, 2.8))
    views.depths[0, :, : SIZE // 2] *= 0.9  # something nearer hides the plane in the left half of that view
    render = torch.full((SIZE, SIZE, 3), 0.25)
    moved = neighbour_references(views, c2w, depth, torch.ones(SIZE, SIZE), render, count=1)[0]
    fell_back = (moved - render).abs().amax(-1) < 1e-6
    assert 0.3 < float(fell_back.float().mean()) < 0.7
    off_object = torch.zeros(SIZE, SIZE)  # opacity 0: nothing to re-project
    assert torch.equal(neighbour_references(views, c2w, depth, off_object, render, count=1)[0], render)


def test_the_nearest_views_come_first_and_a_view_is_not_its_own_neighbour():
    views = views_from((0.0, 0.0, 3.0), (1.5, 0.0, 2.6), (0.4, 0.0, 3.0), (3.0, 0.0, 0.5))
    assert views.nearest(views.c2w[0], 2) == [0, 2]
    assert views.nearest(views.c2w[0], 2, exclude=0) == [2, 1]
    assert len(views.nearest(views.c2w[0], 10, exclude=0)) == 3


def test_normal_views_round_trip_through_their_cache_and_a_stale_key_is_refused(tmp_path):
    views = views_from((0.0, 0.0, 3.0), (0.4, 0.0, 3.0))
    views.key = "field-a"
    views.save(tmp_path / "normal_views.pt")
    loaded = NormalViews.load(tmp_path / "normal_views.pt", "field-a")
    assert loaded is not None and torch.allclose(loaded.images, views.images, atol=0.5 / 255)
    assert torch.equal(loaded.depths, views.depths) and torch.equal(loaded.c2w, views.c2w)
    assert NormalViews.load(tmp_path / "normal_views.pt", "field-b") is None
    (tmp_path / "damaged.pt").write_bytes(b"not a checkpoint")
    assert NormalViews.load(tmp_path / "damaged.pt", "field-a") is None
