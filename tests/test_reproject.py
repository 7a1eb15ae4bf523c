"""Training views re-projected to another pose through depth: checked on a textured plane and on a
sphere, whose depth, appearance and visibility are known in closed form from every camera."""
import math

import torch

from omnipose.compare import NormalViews, neighbour_references, unseen_surface
from omnipose.core.geometry import generate_rays, intrinsics_from_fov, look_at, pixel_centers, spherical_pose

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


def sphere_shot(c2w: torch.Tensor, radius: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A sphere of ``radius`` at the origin seen from c2w: depth along the unit ray (0 off the
    sphere) and the unit normal (3,) at each pixel, (H, W) and (H, W, 3)."""
    origins, directions = generate_rays(c2w, K, pixel_centers(SIZE, SIZE))
    along = -(origins * directions).sum(-1)
    closest = (origins + directions * along[:, None]).norm(dim=-1)
    hit = closest < radius
    depth = torch.where(hit, along - torch.sqrt((radius**2 - closest**2).clamp_min(0.0)), torch.zeros_like(along))
    normals = torch.nn.functional.normalize(origins + directions * depth[:, None], dim=-1)
    return depth.reshape(SIZE, SIZE), normals.reshape(SIZE, SIZE, 3)


def test_the_surface_no_training_view_sees_is_found_on_a_sphere_seen_from_below():
    # Training cameras all look down from 20-70 deg of elevation, 4 radii away (as lego's cameras
    # look down on its base plate); a query from 60 deg below sees the sphere's bottom cap, which
    # none of them sees: a point with unit normal n is seen from the camera at c only where
    # n . c > 1 (the sphere's horizon), or n . c / |c| > 0.25 here.
    cameras = [spherical_pose(math.radians(azimuth), math.radians(elevation), 4.0)
               for elevation in (20.0, 45.0, 70.0) for azimuth in range(0, 360, 30)]
    depths = torch.stack([sphere_shot(c2w)[0] for c2w in cameras])
    views = NormalViews(torch.zeros(len(cameras), SIZE, SIZE, 3), depths, torch.stack(cameras), K)
    query = spherical_pose(math.radians(15.0), math.radians(-60.0), 4.0)
    depth, normals = sphere_shot(query)
    unseen = unseen_surface(views, query, depth, (depth > 0).float())
    centres = torch.stack([c2w[:3, 3] for c2w in cameras]) / 4.0
    best = (normals.reshape(-1, 3) @ centres.T).amax(-1).reshape(SIZE, SIZE)  # how far inside some view's horizon
    on_sphere = depth > 0
    # Beyond every view's horizon nothing can be seen; a view that sees a point within 25 deg of its
    # horizon does not count (its depth changes across a pixel by more than the tolerance there).
    behind, in_view = on_sphere & (best < 0.25), on_sphere & (best > 0.4)
    assert int(behind.sum()) > 200 and int(in_view.sum()) > 200  # the query sees both
    assert bool(unseen[behind].all())
    assert not bool(unseen[in_view].any())
    assert not bool(unseen[~on_sphere].any())  # off the object nothing is unseen
    # From among the training cameras, the whole visible sphere is seen.
    assert not bool(unseen_surface(views, cameras[13], depths[13], (depths[13] > 0).float()).any())
