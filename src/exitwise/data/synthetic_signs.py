"""``synthetic-signs``: procedurally rendered traffic signs in 43 GTSRB-like classes, offline.

Each image is drawn from its own random stream ``numpy.random.default_rng([seed, split, index])``,
so generation is deterministic, independent of the process and of how it is chunked. Rendering is
vectorised over a chunk: the clean sign drawings (:mod:`.sign_templates`) are warped by a per-image
homography (scale, position, roll, yaw/pitch perspective) with ``grid_sample`` onto a 2x
supersampled cluttered background, then occluded, downsampled, blurred, relit and noised.

A latent difficulty ``d ~ Beta(1, 3)`` (mean 0.25; 12.5% of images above 0.5) scales every
nuisance, so most images are easy and a tail is hard, like real photos.
"""

from __future__ import annotations

import logging
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .base import DATASETS, DatasetSplits, make_splits
from .files import load_npz, save_npz_atomic
from .sign_templates import CLASS_NAMES, render_templates

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump when the rendering changes, so stale caches are not reused
NUM_CLASSES = len(CLASS_NAMES)
_N_UNIFORM, _N_NORMAL, _N_SHAPES = 96, 24, 5
# Scene palettes: (top colour, bottom colour), RGB in [0, 1].
_SCENES = np.array([
    [[0.52, 0.68, 0.90], [0.78, 0.84, 0.90]],  # sky
    [[0.18, 0.32, 0.14], [0.36, 0.44, 0.22]],  # foliage
    [[0.56, 0.52, 0.48], [0.34, 0.33, 0.33]],  # buildings / road
    [[0.80, 0.80, 0.82], [0.58, 0.58, 0.60]],  # overcast
    [[0.22, 0.20, 0.28], [0.08, 0.08, 0.10]],  # dusk / night
], dtype=np.float32)  # fmt: skip
_SCENE_P = [0.25, 0.25, 0.25, 0.1, 0.15]
_DISTRACTORS = np.array(
    [[0.75, 0.1, 0.12], [0.1, 0.3, 0.7], [0.92, 0.92, 0.9], [0.9, 0.75, 0.1], [0.08, 0.08, 0.08]],
    dtype=np.float32,
)


class _Columns:
    """Hands out columns of per-image random draws ``(B, K)`` as named, vectorised parameters."""

    def __init__(self, u: np.ndarray, z: np.ndarray) -> None:
        self.u, self.z = u.astype(np.float32), z.astype(np.float32)
        self.iu = self.iz = 0

    def uniform(self, lo: float | np.ndarray = 0.0, hi: float | np.ndarray = 1.0) -> np.ndarray:
        col = self.u[:, self.iu]
        self.iu += 1
        return lo + (hi - lo) * col

    def normal(self, scale: float | np.ndarray = 1.0) -> np.ndarray:
        col = self.z[:, self.iz]
        self.iz += 1
        return scale * col

    def choice(self, p: list[float]) -> np.ndarray:
        return np.searchsorted(np.cumsum(p) / np.sum(p), self.uniform(), side="right")


def _shapes(xx, yy, cx, cy, a, b, theta, box) -> np.ndarray:
    """Coverage masks of rotated ellipses, or rectangles where ``box``, ``(B, K, H, W)``.

    ``xx``/``yy`` are ``(H, W)`` grids; the others ``(B, K)``.
    """
    e = (slice(None), slice(None), None, None)
    f = lambda v: np.asarray(v, dtype=np.float32)[e]  # noqa: E731
    dx, dy = xx - f(cx), yy - f(cy)
    c, s = f(np.cos(theta)), f(np.sin(theta))
    u = np.abs(dx * c + dy * s) / f(a)
    v = np.abs(dy * c - dx * s) / f(b)
    return np.where(np.asarray(box)[e], np.maximum(u, v) <= 1.0, u * u + v * v <= 1.0)


def _homographies(cols: _Columns, d: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-image map from output to template coordinates (both normalised to [-1, 1]).

    Returns:
        ``(H_inv, pose)``: ``(B, 3, 3)`` inverse homographies and ``(B, 3)`` sign centre x, y and
        radius in output coordinates.
    """
    size = np.clip(0.86 + cols.uniform(-0.06, 0.06) - 0.5 * d * cols.uniform(0.6, 1.2), 0.36, 0.98)
    reach = (1.0 - size) * (0.35 + 0.9 * d)  # hard images may be off-centre, even cut by the frame
    cx, cy = cols.uniform(-1, 1) * reach, cols.uniform(-1, 1) * reach
    roll = np.radians(cols.normal(3.0 + 12.0 * d))
    yaw = np.radians(cols.normal(8.0 + 28.0 * d))
    pitch = np.radians(cols.normal(5.0 + 14.0 * d))
    dist = 4.0
    cr, sr, cyw, syw, cp, sp = (np.cos(roll), np.sin(roll), np.cos(yaw), np.sin(yaw),
                                np.cos(pitch), np.sin(pitch))  # fmt: skip
    one, zero = np.ones_like(d), np.zeros_like(d)
    rz = np.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    ry = np.stack([cyw, zero, syw, zero, one, zero, -syw, zero, cyw], -1).reshape(-1, 3, 3)
    rx = np.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(-1, 3, 3)
    r = rx @ ry @ rz
    # Plane point (x, y) -> camera (X, Y, Z + dist) -> projection; an unrotated sign maps 1:1.
    persp = np.zeros_like(r)
    persp[:, :2, :2] = dist * r[:, :2, :2]
    persp[:, 2, :2] = r[:, 2, :2]
    persp[:, 2, 2] = dist
    m = size / margin  # template radius `margin` -> output radius `size`
    place = np.zeros_like(r)
    place[:, 0, 0], place[:, 1, 1], place[:, 2, 2] = m, m, 1.0
    place[:, 0, 2], place[:, 1, 2] = cx, cy
    return np.linalg.inv(place @ persp), np.stack([cx, cy, size], -1)


def _backgrounds(cols: _Columns, d: np.ndarray, textures: np.ndarray, pose: np.ndarray,
                 xx: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Cluttered scenes ``(B, 3, P, P)`` in [0, 1] and each image's scene palette ``(B, 2, 3)``."""
    b, p = len(d), xx.shape[0]
    jitter = np.stack([cols.uniform(-0.08, 0.08) for _ in range(6)], 1).reshape(b, 2, 3)
    scene = _SCENES[cols.choice(_SCENE_P)] + jitter
    angle = np.pi / 2 + cols.normal(0.4)  # mostly a vertical gradient
    ramp = 0.5 + 0.5 * (np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy)
    top, bottom = scene[:, 0, :, None, None], scene[:, 1, :, None, None]
    bg = top * (1 - ramp[:, None]) + bottom * ramp[:, None]
    # Low- and mid-frequency textures (smooth blotches, foliage-like grain), from normal draws.
    low_t = torch.from_numpy(textures[:, :75].reshape(b, 3, 5, 5))
    mid_t = torch.from_numpy(textures[:, 75:331].reshape(b, 1, 16, 16))
    low = F.interpolate(low_t, size=(p, p), mode="bicubic", align_corners=False).numpy()
    low = low.mean(1, keepdims=True) + 0.35 * (low - low.mean(1, keepdims=True))  # mostly grey
    mid = F.interpolate(mid_t, size=(p, p), mode="bilinear", align_corners=False).numpy()
    bg = bg + cols.uniform(0.02, 0.12)[:, None, None, None] * low
    bg = bg + (cols.uniform(0.0, 0.1) * cols.uniform())[:, None, None, None] * mid
    # Clutter: rotated ellipses / boxes / poles in scene colours, some in sign-like colours.
    k = _N_SHAPES
    shape = lambda lo, hi: np.stack([cols.uniform(lo, hi) for _ in range(k)], 1)  # noqa: E731
    active = shape(0, 1) < (0.25 + 0.5 * d)[:, None]
    cx, cy, th = shape(-1.2, 1.2), shape(-1.2, 1.2), shape(0, np.pi)
    a, bb = shape(0.05, 0.7), shape(0.02, 0.4)  # half axes
    box = shape(0, 1) < 0.5
    mix = shape(0, 1)
    colour = scene[:, :1] * mix[..., None] + scene[:, 1:] * (1 - mix[..., None])
    colour = colour + (shape(0, 1)[..., None] - 0.5) * 0.3
    distract = shape(0, 1) < 0.25
    colour = np.where(distract[..., None], _DISTRACTORS[(shape(0, 1) * 5).astype(int)], colour)
    for j in range(k):  # paint in order, later shapes on top, only where a shape is active
        i = np.flatnonzero(active[:, j])
        sl = (i, slice(j, j + 1))
        mask = _shapes(xx, yy, cx[sl], cy[sl], a[sl], bb[sl], th[sl], box[sl])  # (M, 1, P, P)
        bg[i] = np.where(mask, colour[i, j, :, None, None], bg[i])
    # The sign's post: a grey bar below its centre, behind the sign.
    i = np.flatnonzero(cols.uniform() < 0.6)
    half_width = (cols.uniform(0.04, 0.09) * pose[:, 2])[i, None, None]
    post = (np.abs(xx - pose[i, 0, None, None]) < half_width) & (yy > pose[i, 1, None, None])
    bg[i] = np.where(post[:, None], cols.uniform(0.35, 0.65)[i, None, None, None], bg[i])
    return np.clip(bg, 0, 1), scene


def _blur_kernels(cols: _Columns, d: np.ndarray, scale: float, r: int = 3) -> np.ndarray:
    """Per-image motion + defocus kernels ``(B, 2r+1, 2r+1)`` summing to 1."""
    length = scale * 3.5 * d * cols.uniform() * (cols.uniform() < 0.7)
    phi = cols.uniform(0, np.pi)
    sigma = scale * (0.3 + 1.1 * d * cols.uniform())
    t = np.linspace(-0.5, 0.5, 9)[None, :]  # samples along the motion path
    px, py = length[:, None] * t * np.cos(phi)[:, None], length[:, None] * t * np.sin(phi)[:, None]
    g = np.arange(-r, r + 1, dtype=np.float64)
    wx = np.exp(-((g[None, None, :] - px[..., None]) ** 2) / (2 * sigma[:, None, None] ** 2))
    wy = np.exp(-((g[None, None, :] - py[..., None]) ** 2) / (2 * sigma[:, None, None] ** 2))
    k = np.einsum("bsy,bsx->byx", wy, wx)
    k = np.where(k < 1e-4 * k.max(axis=(1, 2), keepdims=True), 0.0, k)  # exact zeros: skippable
    return (k / k.sum(axis=(1, 2), keepdims=True)).astype(np.float32)


def _convolve(x: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Per-image 2-D filtering of ``(B, C, H, W)`` by ``(B, k, k)`` with edge padding."""
    r = kernels.shape[1] // 2
    h, w = x.shape[2:]
    pad = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)), mode="edge")
    out = np.zeros_like(x)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            wgt = kernels[:, dy, dx]
            if np.any(wgt != 0):  # a tap unused by every image adds exactly nothing
                out += wgt[:, None, None, None] * pad[:, :, dy : dy + h, dx : dx + w]
    return out


def render_signs(
    labels: np.ndarray, seed: int, split: int, image_size: int = 32, first_index: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Render one chunk of signs.

    Args:
        labels: class of each image, ``(B,)`` in 0..42.
        seed: dataset seed.
        split: stream id (0 train, 1 test), so the splits never share images.
        image_size: side of the square output.
        first_index: index of the first image in its split; image ``i`` uses the random stream
            ``[seed, split, first_index + i]``.

    Returns:
        ``(images, difficulty)``: uint8 ``(B, 3, S, S)`` and the latent difficulty in [0, 1].
    """
    b, s, p = len(labels), image_size, 2 * image_size
    u = np.empty((b, _N_UNIFORM))
    z = np.empty((b, _N_NORMAL))
    tex = np.empty((b, 331), dtype=np.float32)
    noise = np.empty((b, 3, s, s), dtype=np.float32)
    for i in range(b):
        rng = np.random.default_rng([seed, split, first_index + i])
        u[i], z[i] = rng.random(_N_UNIFORM), rng.standard_normal(_N_NORMAL)
        tex[i] = rng.standard_normal(331, dtype=np.float32)
        noise[i] = rng.standard_normal((3, s, s), dtype=np.float32)
    cols = _Columns(u, z)
    d = 1.0 - (1.0 - cols.uniform()) ** (1.0 / 3.0)  # Beta(1, 3): most easy, a tail hard
    g = ((np.arange(p) + 0.5) / p * 2 - 1).astype(np.float32)
    xx, yy = np.meshgrid(g, g)  # output pixel centres in [-1, 1], (P, P)

    # 1. Warp the clean sign with its pose onto the supersampled canvas.
    h_inv, pose = _homographies(cols, d, margin=0.48 * 2)
    h = h_inv.astype(np.float32)[:, :, :, None, None]  # (B, 3, 3, 1, 1)
    t = h[:, :, 0] * xx + h[:, :, 1] * yy + h[:, :, 2]  # (B, 3, P, P) homogeneous
    grid = np.stack([t[:, 0] / t[:, 2], t[:, 1] / t[:, 2]], -1)  # (B, P, P, 2)
    templates = torch.from_numpy(render_templates(p)[np.asarray(labels)])
    sign = F.grid_sample(templates, torch.from_numpy(grid), mode="bilinear",
                         padding_mode="zeros", align_corners=False).numpy()  # fmt: skip
    rgb, alpha = sign[:, :3], sign[:, 3:]
    # Faded paint and a shadow/light gradient across the sign.
    fade = (cols.uniform(0, 0.5) * d)[:, None, None, None]
    rgb = rgb * (1 - fade) + rgb.mean(1, keepdims=True) * fade
    phi = cols.uniform(0, 2 * np.pi)[:, None, None]
    shade = 1 - (cols.uniform(0, 0.6) * d)[:, None, None] * (
        0.5 + 0.5 * (np.cos(phi) * xx + np.sin(phi) * yy)
    )
    rgb = rgb * shade[:, None].astype(np.float32)

    # 2. Background, composite, occluder (a branch, pole or vehicle in front of the sign).
    bg, scene = _backgrounds(cols, d, tex, pose, xx, yy)
    img = bg * (1 - alpha) + rgb
    occ = (cols.uniform() < 0.04 + 0.4 * d**1.5)[:, None]
    ang, rad = cols.uniform(0, 2 * np.pi), pose[:, 2] * cols.uniform(0.5, 1.1)
    one = lambda v: v[:, None]  # noqa: E731
    mask = _shapes(
        xx, yy, one(pose[:, 0] + rad * np.cos(ang)), one(pose[:, 1] + rad * np.sin(ang)),
        one(pose[:, 2] * cols.uniform(0.25, 0.7)), one(pose[:, 2] * cols.uniform(0.1, 0.45)),
        one(cols.uniform(0, np.pi)), one(cols.uniform() < 0.5),
    )[:, 0] & occ[:, :, None]  # fmt: skip
    occ_colour = scene[:, 1] * cols.uniform(0.4, 1.0)[:, None]
    img = np.where(mask[:, None], occ_colour[:, :, None, None].astype(np.float32), img)

    # 3. Down to the output size (2x2 box filter), then motion / defocus blur.
    img = img.reshape(b, 3, s, 2, s, 2).mean(axis=(3, 5))
    img = _convolve(img, _blur_kernels(cols, d, scale=s / 32))

    # 4. Camera: exposure, contrast, gamma, colour cast, haze; then sensor noise.
    gain = np.clip(np.exp(cols.normal(0.15 + 0.4 * d) - 0.25), 0.2, 1.8)  # photos run dark
    contrast = 1.0 - 0.6 * d * cols.uniform()
    gamma = np.exp(cols.normal(0.1 + 0.2 * d))
    cast = np.exp(np.stack([cols.normal(0.03 + 0.1 * d) for _ in range(3)], 1))
    haze = 0.35 * d * cols.uniform() ** 2
    e = (slice(None), None, None, None)
    mean = img.mean(axis=(1, 2, 3), keepdims=True)
    img = mean + (img - mean) * contrast[e]
    img = np.clip(img * gain[e] * cast[:, :, None, None], 0, 1) ** gamma[e]
    img = img * (1 - haze[e]) + haze[e] * 0.8
    sigma = 0.006 + 0.05 * d * cols.uniform()
    img = img + noise * (sigma[e] * np.sqrt(0.3 + img))
    assert cols.iu <= _N_UNIFORM and cols.iz <= _N_NORMAL, "raise _N_UNIFORM / _N_NORMAL"
    out = np.clip(np.floor(img * 255.0 + 0.5), 0, 255).astype(np.uint8)
    return out, d.astype(np.float32)


def generate_split(
    per_class: int, seed: int, split: int, image_size: int = 32, chunk_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images of each class, classes interleaved (label ``i % 43``).

    Returns:
        uint8 images ``(43 * per_class, 3, S, S)`` and int64 labels.
    """
    labels = np.tile(np.arange(NUM_CLASSES, dtype=np.int64), per_class)
    images = np.empty((len(labels), 3, image_size, image_size), dtype=np.uint8)
    for start in range(0, len(labels), chunk_size):
        stop = min(start + chunk_size, len(labels))
        images[start:stop] = render_signs(labels[start:stop], seed, split, image_size, start)[0]
    return images, labels


@DATASETS.register("synthetic-signs")
def synthetic_signs(
    root: str | Path | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    image_size: int = 32,
    train_per_class: int = 200,
    test_per_class: int = 60,
    cache_dir: str | Path | None = None,
) -> DatasetSplits:
    """Built-in offline traffic signs (43 GTSRB-like classes), generated from ``seed``.

    Args:
        root: unused (the data is generated); kept for the common loader signature.
        seed: seed of the generator and of the validation split.
        val_fraction: share of the generated train split kept for validation.
        image_size: side of the square RGB images (at least 16).
        train_per_class: images per class in the train split (before validation is carved out).
        test_per_class: images per class in the test split.
        cache_dir: if given, generated arrays are saved there as .npz and reused next time.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"synthetic-signs needs a non-negative integer seed, got {seed!r}")
    if image_size < 16 or train_per_class < 1 or test_per_class < 1:
        raise ValueError(
            f"synthetic-signs needs image_size >= 16 and at least 1 image per class, got "
            f"image_size={image_size}, train_per_class={train_per_class}, "
            f"test_per_class={test_per_class}"
        )
    keys = ("x_train", "y_train", "x_test", "y_test")
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / (
            f"synthetic-signs_v{GENERATOR_VERSION}_seed{seed}_size{image_size}"
            f"_train{train_per_class}_test{test_per_class}.npz"
        )
    arrays = None
    if cache is not None and cache.is_file():
        try:
            arrays = load_npz(cache, keys)
            logger.info("synthetic-signs: loaded %s", cache)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            warnings.warn(f"synthetic-signs: unreadable cache {cache} ({e}); regenerating",
                          stacklevel=2)  # fmt: skip
    if arrays is None:
        start = time.perf_counter()
        x_train, y_train = generate_split(train_per_class, seed, 0, image_size)
        x_test, y_test = generate_split(test_per_class, seed, 1, image_size)
        arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        logger.info("synthetic-signs: generated %d images in %.1f s",
                    len(y_train) + len(y_test), time.perf_counter() - start)  # fmt: skip
        if cache is not None:
            save_npz_atomic(cache, **arrays)
    return make_splits(
        "synthetic-signs", arrays["x_train"], arrays["y_train"], arrays["x_test"],
        arrays["y_test"], CLASS_NAMES, seed=seed, val_fraction=val_fraction,
    )  # fmt: skip
