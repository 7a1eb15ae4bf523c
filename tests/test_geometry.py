"""Camera geometry on hand-computed cases, round trips, and the real lego poses."""
import math

import pytest
import torch

from omnipose.core import geometry as g


def test_intrinsics_from_fov_hand_case():
    # 90 degree horizontal FOV over 200 pixels: f = 100 / tan(45 deg) = 100.
    K = g.intrinsics_from_fov(math.pi / 2, 200, 100)
    assert torch.allclose(K, torch.tensor([[100.0, 0, 100], [0, 100, 50], [0, 0, 1]]))


def test_scale_intrinsics_keeps_pixel_centres():
    K = g.make_intrinsics(300.0, 310.0, 200.0, 150.0)
    half = g.scale_intrinsics(K, 0.5)
    assert torch.allclose(half, torch.tensor([[150.0, 0, 100], [0, 155, 75], [0, 0, 1]]))
    # A world point lands on the same relative image position at both sizes.
    c2w = g.look_at(torch.tensor([0.0, -4.0, 1.0]), torch.zeros(3))
    point = torch.tensor([[0.3, 0.2, -0.1]])
    full_px, _ = g.project(point, c2w, K)
    half_px, _ = g.project(point, c2w, half)
    assert torch.allclose(half_px, full_px * 0.5, atol=1e-4)


def test_camera_looks_down_minus_z_and_centre_ray():
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    K = g.make_intrinsics(100.0, 100.0, 50.0, 40.0)
    rays_o, rays_d = g.generate_rays(c2w, K, torch.tensor([[50.0, 40.0], [150.0, 40.0], [50.0, 140.0]]))
    assert torch.allclose(rays_o, c2w[:3, 3].expand(3, 3))
    assert torch.allclose(rays_d[0], torch.tensor([0.0, 0.0, -1.0]))
    # One focal length to the right of the centre: 45 degrees towards +x; below the centre: towards -y.
    assert torch.allclose(rays_d[1], torch.tensor([1.0, 0.0, -1.0]) / math.sqrt(2))
    assert torch.allclose(rays_d[2], torch.tensor([0.0, -1.0, -1.0]) / math.sqrt(2))


def test_project_unproject_round_trip():
    torch.manual_seed(0)
    c2w = g.spherical_pose(0.7, 0.4, 4.0)
    K = g.intrinsics_from_fov(0.69, 200, 200)
    points = torch.randn(50, 3) * 0.5
    pixels, depth = g.project(points, c2w, K)
    assert (depth > 0).all()
    assert torch.allclose(g.unproject(pixels, depth, c2w, K), points, atol=1e-4)
    # and the other way round, from pixels
    pixels = torch.rand(20, 2) * 200
    depth = 3.0 + torch.rand(20)
    again, depth_again = g.project(g.unproject(pixels, depth, c2w, K), c2w, K)
    assert torch.allclose(again, pixels, atol=1e-3) and torch.allclose(depth_again, depth, atol=1e-4)


def test_ray_of_a_pixel_hits_the_point_seen_there():
    c2w = g.spherical_pose(2.0, -0.3, 5.0)
    K = g.intrinsics_from_fov(0.8, 160, 120)
    point = torch.tensor([[0.2, -0.4, 0.3]])
    pixel, depth = g.project(point, c2w, K)
    rays_o, rays_d = g.generate_rays(c2w, K, pixel, normalize=False)
    assert torch.allclose(rays_o + depth[:, None] * rays_d, point, atol=1e-5)


def test_image_rays_are_row_major_pixel_centres():
    K = g.make_intrinsics(10.0, 10.0, 2.0, 1.5)
    pixels = g.pixel_centers(3, 4)
    assert pixels.shape == (12, 2)
    assert torch.equal(pixels[1], torch.tensor([1.5, 0.5])) and torch.equal(pixels[4], torch.tensor([0.5, 1.5]))
    rays_o, rays_d = g.image_rays(torch.eye(4), K, 3, 4)
    assert rays_d.shape == (12, 3) and torch.allclose(rays_d.norm(dim=-1), torch.ones(12))


def test_look_at_and_spherical_pose_point_at_target():
    c2w = g.spherical_pose(1.1, 0.5, 3.0, target=(0.1, 0.2, 0.3))
    K = g.intrinsics_from_fov(0.7, 100, 100)
    pixel, depth = g.project(torch.tensor([[0.1, 0.2, 0.3]]), c2w, K)
    assert torch.allclose(pixel, torch.tensor([[50.0, 50.0]]), atol=1e-4)
    assert depth.item() == pytest.approx(3.0, rel=1e-5)
    assert torch.allclose(c2w[:3, :3] @ c2w[:3, :3].T, torch.eye(3), atol=1e-6)
    # World up (+Z) appears up in the image: a point above the target projects to a smaller row.
    above, _ = g.project(torch.tensor([[0.1, 0.2, 0.6]]), c2w, K)
    assert above[0, 1] < 50.0


def test_roll_turns_image_content():
    c2w = g.spherical_pose(0.0, 0.2, 4.0)
    K = g.intrinsics_from_fov(0.7, 100, 100)
    point = g.unproject(torch.tensor([[80.0, 50.0]]), torch.tensor([4.0]), c2w, K)
    rolled = g.roll_camera(c2w, math.pi / 2)
    pixel, _ = g.project(point, rolled, K)
    # The camera turned counter-clockwise by 90 degrees, so content to the right moves down.
    assert torch.allclose(pixel, torch.tensor([[50.0, 80.0]]), atol=1e-3)


def test_a_turn_about_a_point_carries_the_camera_and_keeps_what_it_sees():
    """A camera carried by a rotation about a point sees that point where it saw it before, from the
    same distance, turned by exactly the rotation's angle."""
    point = torch.tensor([0.2, -0.1, 0.3])
    c2w = g.spherical_pose(0.4, 0.5, 3.0, target=point.tolist())
    K = g.intrinsics_from_fov(0.7, 100, 100)
    rotation = g.so3_exp(torch.tensor([0.3, -0.2, 0.5]))
    turned = g.turn_about(torch.stack([c2w, c2w]), rotation, point)  # batched
    assert torch.allclose(g.project(point[None], turned[0], K)[0], g.project(point[None], c2w, K)[0], atol=1e-4)
    assert float((turned[0, :3, 3] - point).norm()) == pytest.approx(3.0, rel=1e-6)
    angle = math.degrees(float(torch.tensor([0.3, -0.2, 0.5]).norm()))
    assert float(g.rotation_error_deg(turned[1, :3, :3], c2w[:3, :3])) == pytest.approx(angle, abs=1e-3)


def test_a_half_turn_about_the_vertical_shows_the_other_side_at_the_same_height():
    point, up = torch.tensor([0.2, -0.1, 0.3]), torch.tensor([0.0, 0.0, 2.0])  # any length of axis
    c2w = g.spherical_pose(0.4, 0.5, 3.0, target=point.tolist())
    turned = g.half_turn(c2w, up, point)
    assert torch.allclose(turned[:3, 3] - point, (c2w[:3, 3] - point) * torch.tensor([-1.0, -1.0, 1.0]), atol=1e-6)
    assert torch.allclose(turned, g.spherical_pose(0.4 + math.pi, 0.5, 3.0, target=point.tolist()), atol=1e-5)
    assert float(g.rotation_error_deg(turned[:3, :3], c2w[:3, :3])) == pytest.approx(180.0, abs=1e-3)
    assert torch.allclose(g.half_turn(turned[None], up, point)[0], c2w, atol=1e-6)  # batched, and its own inverse


def test_opengl_opencv_flip_is_an_involution():
    c2w = g.spherical_pose(0.3, 0.9, 2.0)
    cv = g.opengl_to_opencv(c2w)
    assert torch.allclose(g.opengl_to_opencv(cv), c2w)
    # In OpenCV the camera looks down +Z: the target lies along +z of the camera.
    w2c = g.invert_pose(cv)
    assert (w2c[:3, :3] @ torch.zeros(3) + w2c[:3, 3])[2] > 0


def test_invert_pose():
    T = g.se3_exp(torch.tensor([0.3, -0.2, 0.5, 0.4, -0.7, 0.2]))
    assert torch.allclose(g.invert_pose(T) @ T, torch.eye(4), atol=1e-6)


def test_so3_exp_hand_case():
    R = g.so3_exp(torch.tensor([0.0, 0.0, math.pi / 2]))
    assert torch.allclose(R, torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]), atol=1e-6)


@pytest.mark.parametrize("scale", [1e-9, 1e-4, 0.5, 2.0, 3.1])
def test_se3_log_inverts_exp(scale):
    torch.manual_seed(1)
    xi = torch.randn(8, 6, dtype=torch.float64)
    xi[:, 3:] = xi[:, 3:] / xi[:, 3:].norm(dim=-1, keepdim=True) * scale
    assert torch.allclose(g.se3_log(g.se3_exp(xi)), xi, atol=1e-8)


def test_so3_log_near_pi():
    axis = torch.tensor([1.0, 2.0, -2.0], dtype=torch.float64) / 3
    for angle in (math.pi - 1e-5, math.pi):
        w = axis * angle
        recovered = g.so3_log(g.so3_exp(w))
        assert torch.allclose(g.so3_exp(recovered), g.so3_exp(w), atol=1e-8)


@pytest.mark.parametrize("scale", [1e-7, 0.3, 2.5])
def test_se3_exp_gradient_matches_finite_differences(scale):
    torch.manual_seed(2)
    xi = (torch.randn(6, dtype=torch.float64) * scale).requires_grad_()
    assert torch.autograd.gradcheck(g.se3_exp, (xi,))
    assert torch.autograd.gradcheck(g.so3_exp, (xi[3:].detach().clone().requires_grad_(),))


def test_apply_twist_is_a_camera_frame_update():
    c2w = g.spherical_pose(0.4, 0.3, 4.0)
    # A pure translation along the camera's own -Z moves the camera towards what it looks at.
    moved = g.apply_twist(c2w, torch.tensor([0.0, 0.0, -1.0, 0.0, 0.0, 0.0]))
    assert moved[:3, 3].norm().item() == pytest.approx(3.0, abs=1e-5)


def test_pose_errors():
    c2w = g.spherical_pose(0.4, 0.3, 4.0)
    rotated = g.roll_camera(c2w, math.radians(3.0))
    rotated[:3, 3] += torch.tensor([0.04, 0.0, 0.0])
    rotation, translation = g.pose_errors(rotated, c2w)
    assert rotation.item() == pytest.approx(3.0, abs=1e-3)
    assert translation.item() == pytest.approx(0.01, abs=1e-5)


@pytest.mark.parametrize("degrees", [0.0, 1e-3, 0.05, 90.0, 179.0, 180.0])
def test_rotation_error_is_accurate_from_nothing_to_a_half_turn(degrees):
    """float32 matrices, as the pose code uses: the error of a camera against itself is 0 and a small
    turn reads as itself (acos of the trace read identical float32 poses as 0.03 deg apart)."""
    c2w = g.spherical_pose(0.2, 0.5, 4.0)
    turned = g.roll_camera(c2w, math.radians(degrees))
    assert g.rotation_error_deg(turned[:3, :3], c2w[:3, :3]).item() == pytest.approx(degrees, abs=1e-4 + 1e-5 * degrees)
    assert g.pose_errors(c2w, c2w)[0].item() < 1e-4


def test_real_lego_cameras_look_at_the_object(lego_dir):
    from omnipose.data import load_transforms

    views = load_transforms(lego_dir / "transforms_train.json", size=100, progress=False)
    for c2w in views.c2w:
        pixel, depth = g.project(torch.zeros(1, 3), c2w, views.K)
        assert depth.item() == pytest.approx(4.031, abs=0.01)
        assert torch.allclose(pixel, torch.tensor([[50.0, 50.0]]), atol=0.5)
    # The object is drawn where the rays through its pixels meet the scene: the opaque pixels of a
    # view are the ones whose rays pass within the lego's bounds.
    image = views.images[0]
    rays_o, rays_d = g.image_rays(views.c2w[0], views.K, 100, 100)
    t = -(rays_o * rays_d).sum(-1)  # closest approach to the origin
    closest = (rays_o + t[:, None] * rays_d).norm(dim=-1).reshape(100, 100)
    drawn = (image < 0.95).any(-1)
    assert (closest[drawn] < 1.8).float().mean() > 0.99


def test_axes_focus_is_the_point_every_camera_looks_at(lego_dir):
    target = torch.tensor([0.3, -0.2, 0.1])
    cameras = torch.stack([g.spherical_pose(a, e, 4.0, target) for a in (0.0, 1.0, 2.5, 4.0) for e in (-0.3, 0.4)])
    assert torch.allclose(g.axes_focus(cameras), target, atol=1e-4)
    from omnipose.data import load_transforms  # Blender's lego cameras all look at the origin

    views = load_transforms(lego_dir / "transforms_train.json", size=50, progress=False)
    assert g.axes_focus(views.c2w).norm() < 1e-3


def test_gap_directions_fill_only_what_is_uncovered():
    sphere = g.fibonacci_directions(500)
    assert torch.allclose(sphere.norm(dim=1), torch.ones(500), atol=1e-5)
    assert abs(float(sphere.mean(0).norm())) < 1e-2  # evenly spread
    assert len(g.gap_directions(sphere, 10, 15.0)) == 0  # nothing is 15 degrees from 500 even points
    upper = sphere[sphere[:, 2] > 0.0]
    gaps = g.gap_directions(upper, 6, 15.0)
    assert len(gaps) == 6
    to_covered = torch.rad2deg(torch.arccos((gaps @ upper.T).clamp(-1, 1))).min(1).values
    assert (to_covered > 15.0).all()
    between = torch.rad2deg(torch.arccos((gaps @ gaps.T).clamp(-1, 1))) + 360 * torch.eye(6)
    assert (between > 15.0).all()
    assert gaps[0, 2] < -0.99  # the farthest gap first: the bottom pole
