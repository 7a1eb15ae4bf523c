"""Camera geometry: intrinsics, rays, projection, and the se(3) exponential map.

Conventions (see docs/ARCHITECTURE.md):
- ``c2w`` is a 4x4 camera-to-world matrix in the OpenGL/Blender convention: the camera looks
  down its -Z axis, +Y is up in the image, +X is right.
- ``K`` is a 3x3 pinhole matrix in pixels for the OpenCV-style camera (looks down +Z, y down).
- Pixel ``(u, v)`` = (column, row) from the top-left corner; the centre of pixel (i, j) is at
  (i + 0.5, j + 0.5).
- A twist ``xi = (v, w)``: (..., 6), translational part ``v`` first, rotational ``w`` second.

Every function is differentiable and accepts leading batch dimensions where it says ``(...)``.
"""
from __future__ import annotations

import math

import torch

# Flip between the OpenGL camera (y up, looking down -z) and the OpenCV camera (y down, +z).
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0]))


# ----------------------------------------------------------------------------- intrinsics
def focal_from_fov(fov: float, size: int) -> float:
    """Focal length in pixels of a pinhole whose field of view ``fov`` (radians) spans ``size`` pixels."""
    return 0.5 * size / math.tan(0.5 * fov)


def intrinsics_from_fov(fov_x: float, width: int, height: int, fov_y: float | None = None) -> torch.Tensor:
    """Pinhole intrinsics from the horizontal field of view, principal point at the image centre.

    Square pixels unless ``fov_y`` is given. Returns K: (3, 3) float32.
    """
    fx = focal_from_fov(fov_x, width)
    fy = fx if fov_y is None else focal_from_fov(fov_y, height)
    return make_intrinsics(fx, fy, width / 2.0, height / 2.0)


def make_intrinsics(fx: float, fy: float, cx: float, cy: float) -> torch.Tensor:
    """K: (3, 3) float32 from focal lengths and principal point in pixels."""
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float32)


def scale_intrinsics(K: torch.Tensor, scale_x: float, scale_y: float | None = None) -> torch.Tensor:
    """Intrinsics of the same camera after resizing the image by (scale_x, scale_y).

    Pixel centres map as u' + 0.5 = s (u + 0.5), so fx, cx scale exactly by s with our
    corner-origin convention. K: (..., 3, 3). Returns (..., 3, 3).
    """
    scale_y = scale_x if scale_y is None else scale_y
    scale = torch.tensor([scale_x, scale_y, 1.0], dtype=K.dtype, device=K.device)
    return K * scale[:, None]


def warped_intrinsics(K: torch.Tensor, affine) -> torch.Tensor:
    """Intrinsics (3, 3) of the image moved by a (2, 3) pixel ``affine`` (a crop, a zoom; pixel centres
    at +0.5 on both sides, as ``core.image.warp_image`` moves images), as float32 on the CPU."""
    full = torch.cat([torch.as_tensor(affine, dtype=torch.float32), torch.tensor([[0.0, 0.0, 1.0]])])
    return full @ K.detach().float().cpu()


# ----------------------------------------------------------------------------- conversions
def opengl_to_opencv(c2w: torch.Tensor) -> torch.Tensor:
    """Camera-to-world in the OpenCV convention from one in the OpenGL convention (and back).

    c2w: (..., 4, 4) or (..., 3, 4). Flips the camera's y and z axes; the operation is its own inverse.
    """
    flipped = c2w.clone()
    flipped[..., :3, 1:3] = -flipped[..., :3, 1:3]
    return flipped


def invert_pose(c2w: torch.Tensor) -> torch.Tensor:
    """Inverse of a rigid 4x4 transform. c2w: (..., 4, 4). Returns w2c: (..., 4, 4)."""
    rotation = c2w[..., :3, :3].transpose(-1, -2)
    translation = -(rotation @ c2w[..., :3, 3:4])
    bottom = c2w[..., 3:4, :].new_zeros(c2w.shape[:-2] + (1, 4))
    bottom[..., 0, 3] = 1.0
    return torch.cat([torch.cat([rotation, translation], -1), bottom], -2)


def rigid_pose_problem(c2w, tolerance: float = 1e-3) -> str | None:
    """What keeps ``c2w`` from being a camera pose, or None when it is one.

    A pose is a finite 4x4 (or 3x4) matrix whose rotation part is orthonormal with determinant +1
    within ``tolerance`` (a scaled or sheared "rotation" would silently stretch every ray) and
    whose last row is (0, 0, 0, 1).
    """
    try:
        matrix = torch.as_tensor(c2w, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return "is not a 4x4 matrix of numbers (rows of different lengths or non-numbers)"
    if tuple(matrix.shape) not in ((4, 4), (3, 4)):
        return f"has shape {tuple(matrix.shape)}, not 4x4"
    if not torch.isfinite(matrix).all():
        return "holds NaN or infinite values"
    if matrix.shape[0] == 4 and not torch.allclose(matrix[3], matrix.new_tensor([0.0, 0.0, 0.0, 1.0]), atol=tolerance):
        return f"has last row {matrix[3].tolist()}, not [0, 0, 0, 1]"
    rotation = matrix[:3, :3]
    deviation = float((rotation @ rotation.T - torch.eye(3, dtype=torch.float64)).abs().max())
    if deviation > tolerance:
        scales = torch.linalg.norm(rotation, dim=0).tolist()
        return (f"has a rotation part that is not a rotation (R R^T differs from the identity by {deviation:.3g}; "
                f"column lengths {', '.join(f'{v:.3g}' for v in scales)})")
    if float(torch.linalg.det(rotation)) < 0:
        return "has a mirrored rotation part (determinant -1): one camera axis is flipped"
    return None


# ----------------------------------------------------------------------------- rays
def pixel_centers(height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Pixel centres of a full image in row-major order. Returns (H * W, 2) as (u, v)."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=device) + 0.5,
        torch.arange(width, dtype=torch.float32, device=device) + 0.5,
        indexing="ij",
    )
    return torch.stack([u.reshape(-1), v.reshape(-1)], -1)


def camera_directions(pixels: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Ray directions in the OpenGL camera frame, scaled so that their z component is -1.

    pixels: (N, 2) as (u, v); K: (3, 3). Returns (N, 3); the ray parameter t is then the depth
    along the optical axis.
    """
    x = (pixels[:, 0] - K[0, 2]) / K[0, 0]
    y = (pixels[:, 1] - K[1, 2]) / K[1, 1]
    return torch.stack([x, -y, -torch.ones_like(x)], -1)


def generate_rays(
    c2w: torch.Tensor, K: torch.Tensor, pixels: torch.Tensor, normalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays through pixels of a camera.

    c2w: (4, 4) or (3, 4) OpenGL camera-to-world, or (N, 4, 4) one pose per pixel;
    K: (3, 3); pixels: (N, 2) as (u, v).
    Returns rays_o: (N, 3) and rays_d: (N, 3), unit length when ``normalize`` (else camera z = -1).
    """
    directions = camera_directions(pixels, K)
    rotation = c2w[..., :3, :3]
    if rotation.dim() == 2:
        rays_d = directions @ rotation.T
        rays_o = c2w[:3, 3].expand_as(rays_d)
    else:
        rays_d = (rotation @ directions[..., None])[..., 0]
        rays_o = c2w[..., :3, 3]
    if normalize:
        rays_d = rays_d / rays_d.norm(dim=-1, keepdim=True)
    return rays_o, rays_d


def image_rays(
    c2w: torch.Tensor, K: torch.Tensor, height: int, width: int, normalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through every pixel centre, row-major. Returns rays_o, rays_d: (H * W, 3)."""
    pixels = pixel_centers(height, width, device=c2w.device)
    return generate_rays(c2w, K.to(c2w.device), pixels, normalize=normalize)


def project(points: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points into a camera.

    points: (N, 3); c2w: (4, 4) OpenGL; K: (3, 3).
    Returns pixels: (N, 2) as (u, v) and depth: (N,), positive in front of the camera.
    """
    w2c = invert_pose(c2w)
    camera = points @ w2c[:3, :3].T + w2c[:3, 3]
    depth = -camera[:, 2]
    u = K[0, 0] * camera[:, 0] / depth + K[0, 2]
    v = -K[1, 1] * camera[:, 1] / depth + K[1, 2]
    return torch.stack([u, v], -1), depth


def unproject(pixels: torch.Tensor, depth: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """World points seen at ``pixels`` at a given depth along the optical axis.

    pixels: (N, 2); depth: (N,); c2w: (4, 4) OpenGL; K: (3, 3). Returns points: (N, 3).
    """
    camera = camera_directions(pixels, K) * depth[:, None]
    return camera @ c2w[:3, :3].T + c2w[:3, 3]


# ----------------------------------------------------------------------------- poses
def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """OpenGL camera-to-world of a camera at ``eye`` looking at ``target``.

    eye, target: (3,); up: (3,), default +Z (Blender's world up). Returns (4, 4) float32.
    """
    eye = torch.as_tensor(eye, dtype=torch.float32)
    target = torch.as_tensor(target, dtype=torch.float32)
    up = torch.tensor([0.0, 0.0, 1.0]) if up is None else torch.as_tensor(up, dtype=torch.float32)
    backward = eye - target
    backward = backward / backward.norm()
    right = torch.linalg.cross(up, backward)
    if right.norm() < 1e-6:  # looking straight along ``up``: any perpendicular will do
        right = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]), backward)
    right = right / right.norm()
    true_up = torch.linalg.cross(backward, right)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, backward, eye
    return c2w


def spherical_pose(azimuth: float, elevation: float, radius: float, target=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """Camera on a sphere around ``target`` looking at it, world up +Z.

    azimuth, elevation in radians (elevation 0 = horizon, pi/2 = straight above). Returns (4, 4).
    """
    target_t = torch.as_tensor(target, dtype=torch.float32)
    eye = target_t + radius * torch.tensor(
        [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)]
    )
    return look_at(eye, target_t)


def axes_focus(c2w: torch.Tensor) -> torch.Tensor:
    """The point closest (least squares) to every camera's optical axis: what a ring of cameras looks at.

    c2w: (N, 4, 4) OpenGL cameras (looking along -Z). Returns (3,). Falls back to the mean camera
    centre pushed along the mean viewing direction when the axes are (nearly) parallel.
    """
    c2w = torch.as_tensor(c2w, dtype=torch.float64)
    origins, forward = c2w[:, :3, 3], -c2w[:, :3, 2]
    forward = forward / forward.norm(dim=1, keepdim=True)
    projector = torch.eye(3, dtype=torch.float64) - forward[:, :, None] * forward[:, None, :]  # (N, 3, 3)
    A, b = projector.sum(0), (projector @ origins[:, :, None]).sum(0)[:, 0]
    if torch.linalg.matrix_rank(A) < 3:
        return (origins.mean(0) + forward.mean(0)).float()
    return torch.linalg.solve(A, b).float()


def fibonacci_directions(count: int) -> torch.Tensor:
    """``count`` unit vectors spread evenly over the sphere (golden-angle spiral). Returns (count, 3)."""
    i = torch.arange(count, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / count
    azimuth = math.pi * (3.0 - math.sqrt(5.0)) * i
    ring = torch.sqrt(1.0 - z * z)
    return torch.stack([ring * torch.cos(azimuth), ring * torch.sin(azimuth), z], 1).float()


def gap_directions(covered: torch.Tensor, count: int, min_angle_deg: float, candidates: int = 1000) -> torch.Tensor:
    """Up to ``count`` directions of the sphere farther than ``min_angle_deg`` from every covered one.

    Chosen greedily, farthest from everything chosen so far first, so a few fill the largest gaps.
    covered: (N, 3) unit vectors. Returns (M, 3), M <= count (0 when nothing is that far).
    """
    pool = fibonacci_directions(candidates)
    taken = torch.nn.functional.normalize(torch.as_tensor(covered, dtype=torch.float32), dim=1)
    chosen = []
    for _ in range(count):
        nearest = torch.rad2deg(torch.arccos((pool @ taken.T).clamp(-1.0, 1.0))).min(1).values
        best = int(nearest.argmax())
        if float(nearest[best]) <= min_angle_deg:
            break
        chosen.append(pool[best])
        taken = torch.cat([taken, pool[best][None]])
    return torch.stack(chosen) if chosen else torch.zeros(0, 3)


def roll_camera(c2w: torch.Tensor, angle: float | torch.Tensor) -> torch.Tensor:
    """Rotate a camera about its own viewing axis by ``angle`` radians (in-plane rotation).

    Positive angles turn the camera counter-clockwise about its -Z (viewing) axis, so that the image
    content turns clockwise. c2w: (4, 4). Returns (4, 4).
    """
    angle = torch.as_tensor(angle, dtype=c2w.dtype, device=c2w.device)
    c, s = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    roll = torch.stack(
        [torch.stack([c, -s, zero]), torch.stack([s, c, zero]), torch.stack([zero, zero, one])]
    )
    out = c2w.clone()
    out[:3, :3] = c2w[:3, :3] @ roll
    return out


def half_turn(c2w: torch.Tensor, axis: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """Cameras turned 180 degrees about the line through ``point`` along ``axis``: the same view of
    the object from the opposite side of that line.

    c2w: (..., 4, 4); axis, point: (3,) world (axis need not be unit). Returns (..., 4, 4).
    """
    axis = torch.as_tensor(axis, dtype=c2w.dtype, device=c2w.device)
    return turn_about(c2w, so3_exp(axis / axis.norm() * math.pi), point)


def turn_about(c2w: torch.Tensor, rotation: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """Cameras c2w (..., 4, 4) carried by the world rotation (3, 3) about ``point`` (3,), as if
    fixed to the object turned the other way. Returns (..., 4, 4)."""
    rotation = torch.as_tensor(rotation, dtype=c2w.dtype, device=c2w.device)
    point = torch.as_tensor(point, dtype=c2w.dtype, device=c2w.device)
    out = c2w.clone()
    out[..., :3, :3] = rotation @ c2w[..., :3, :3]
    out[..., :3, 3] = (c2w[..., :3, 3] - point) @ rotation.T + point
    return out


# ----------------------------------------------------------------------------- SO(3) / SE(3)
def _skew(w: torch.Tensor) -> torch.Tensor:
    """Cross-product matrix. w: (..., 3). Returns (..., 3, 3)."""
    zero = torch.zeros_like(w[..., 0])
    return torch.stack(
        [
            torch.stack([zero, -w[..., 2], w[..., 1]], -1),
            torch.stack([w[..., 2], zero, -w[..., 0]], -1),
            torch.stack([-w[..., 1], w[..., 0], zero], -1),
        ],
        -2,
    )


def _exp_coefficients(theta_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A = sin t / t, B = (1 - cos t) / t^2, C = (t - sin t) / t^3, with Taylor series near 0.

    The series keep the map and its gradient exact where the closed forms divide 0 by 0.
    """
    small = theta_sq < 1e-6
    safe_sq = torch.where(small, torch.ones_like(theta_sq), theta_sq)
    theta = safe_sq.sqrt()
    a = torch.where(small, 1 - theta_sq / 6 + theta_sq**2 / 120, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta_sq / 24 + theta_sq**2 / 720, (1 - torch.cos(theta)) / safe_sq)
    c = torch.where(small, 1.0 / 6 - theta_sq / 120 + theta_sq**2 / 5040, (theta - torch.sin(theta)) / (safe_sq * theta))
    return a, b, c


def so3_exp(w: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of an axis-angle vector (Rodrigues). w: (..., 3). Returns (..., 3, 3)."""
    a, b, _ = _exp_coefficients((w * w).sum(-1))
    skew = _skew(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand(skew.shape)
    return eye + a[..., None, None] * skew + b[..., None, None] * (skew @ skew)


def so3_log(R: torch.Tensor) -> torch.Tensor:
    """Axis-angle vector of a rotation matrix, angle in [0, pi]. R: (..., 3, 3). Returns (..., 3)."""
    cos = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1.0, 1.0)
    theta = torch.acos(cos)
    vee = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    sin = torch.sin(theta)
    small = theta < 1e-4
    near_pi = theta > math.pi - 1e-3
    factor = torch.where(small, 0.5 + theta**2 / 12, theta / (2 * torch.where(small, torch.ones_like(sin), sin)))
    w = factor[..., None] * vee
    if near_pi.any():
        # sin(theta) ~ 0 loses the axis; read it from the symmetric part instead, where
        # (R + R^T) / 2 + I = (1 + cos) I + (1 - cos) a a^T ~ 2 a a^T.
        sym = ((R + R.transpose(-1, -2)) / 2 + torch.eye(3, dtype=R.dtype, device=R.device)) / 2
        diag = sym.diagonal(dim1=-2, dim2=-1).clamp(min=0)
        column = diag.argmax(-1)
        axis = torch.gather(sym, -1, column[..., None, None].expand(sym.shape[:-1] + (1,)))[..., 0]
        axis = axis / axis.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        sign = torch.where((axis * vee).sum(-1, keepdim=True) < 0, -1.0, 1.0)
        w = torch.where(near_pi[..., None], sign * axis * theta[..., None], w)
    return w


def se3_exp(xi: torch.Tensor) -> torch.Tensor:
    """Rigid transform of a twist xi = (v, w). xi: (..., 6). Returns (..., 4, 4).

    R = exp([w]x), t = V v with V = I + B [w]x + C [w]x^2.
    """
    v, w = xi[..., :3], xi[..., 3:]
    a, b, c = _exp_coefficients((w * w).sum(-1))
    skew = _skew(w)
    skew_sq = skew @ skew
    eye = torch.eye(3, dtype=xi.dtype, device=xi.device).expand(skew.shape)
    rotation = eye + a[..., None, None] * skew + b[..., None, None] * skew_sq
    V = eye + b[..., None, None] * skew + c[..., None, None] * skew_sq
    translation = (V @ v[..., None])[..., 0]
    top = torch.cat([rotation, translation[..., None]], -1)
    bottom = torch.zeros(xi.shape[:-1] + (1, 4), dtype=xi.dtype, device=xi.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], -2)


def se3_log(T: torch.Tensor) -> torch.Tensor:
    """Twist (v, w) of a rigid transform, the inverse of ``se3_exp``. T: (..., 4, 4). Returns (..., 6)."""
    w = so3_log(T[..., :3, :3])
    theta_sq = (w * w).sum(-1)
    a, b, _ = _exp_coefficients(theta_sq)
    small = theta_sq < 1e-6
    # V^-1 = I - [w]x / 2 + (1 - A / (2 B)) / theta^2 [w]x^2
    coefficient = torch.where(
        small, 1.0 / 12 + theta_sq / 720, (1 - a / (2 * b)) / torch.where(small, torch.ones_like(theta_sq), theta_sq)
    )
    skew = _skew(w)
    eye = torch.eye(3, dtype=T.dtype, device=T.device).expand(skew.shape)
    V_inv = eye - 0.5 * skew + coefficient[..., None, None] * (skew @ skew)
    v = (V_inv @ T[..., :3, 3:4])[..., 0]
    return torch.cat([v, w], -1)


def apply_twist(c2w: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    """Perturb a pose by a twist expressed in the camera frame: c2w @ exp(xi).

    A camera-frame update keeps the optimisation's scale independent of where the object sits in
    the world. c2w: (..., 4, 4); xi: (..., 6). Returns (..., 4, 4).
    """
    return c2w @ se3_exp(xi)


# ----------------------------------------------------------------------------- pose errors
def rotation_error_deg(R_a: torch.Tensor, R_b: torch.Tensor) -> torch.Tensor:
    """Angle of the rotation between two rotation matrices, in degrees. (..., 3, 3) -> (...).

    atan2(sin, cos) rather than acos(cos): near 0 the cosine moves by angle^2 / 2, so in float32
    acos turns one rounding of the trace into 0.03 deg (it did so for identical matrices); the
    sine, from the antisymmetric part, stays exact to about 1e-5 deg.
    """
    relative = R_a.transpose(-1, -2) @ R_b
    cos = (relative.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    axis = torch.stack(
        [relative[..., 2, 1] - relative[..., 1, 2], relative[..., 0, 2] - relative[..., 2, 0], relative[..., 1, 0] - relative[..., 0, 1]],
        -1,
    )
    return torch.rad2deg(torch.atan2(axis.norm(dim=-1) / 2, cos))


def pose_errors(c2w_estimate: torch.Tensor, c2w_true: torch.Tensor, target=(0.0, 0.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation error (degrees) and translation error relative to the camera's distance to ``target``.

    c2w_estimate, c2w_true: (..., 4, 4). Returns two (...) tensors.
    """
    rotation = rotation_error_deg(c2w_estimate[..., :3, :3], c2w_true[..., :3, :3])
    target_t = torch.as_tensor(target, dtype=c2w_true.dtype, device=c2w_true.device)
    distance = (c2w_true[..., :3, 3] - target_t).norm(dim=-1)
    translation = (c2w_estimate[..., :3, 3] - c2w_true[..., :3, 3]).norm(dim=-1) / distance
    return rotation, translation
