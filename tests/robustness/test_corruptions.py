"""Corruptions: reproducible, bounded, shape-preserving, identity at level 0, calibrated levels."""

import math

import pytest
import torch
from torchvision.transforms.functional import gaussian_blur as tv_gaussian_blur

from exitwise.robustness import corruptions as C

NAMES = ["gaussian_noise", "uniform_noise", "impulse_noise", "gaussian_blur"]
NOISES = ["gaussian_noise", "uniform_noise", "impulse_noise"]
MODULES = {
    "gaussian_noise": C.GaussianNoise,
    "uniform_noise": C.UniformNoise,
    "impulse_noise": C.ImpulseNoise,
    "gaussian_blur": C.GaussianBlur,
}
LEVEL = {"gaussian_noise": 0.2, "uniform_noise": 0.3, "impulse_noise": 0.2, "gaussian_blur": 1.2}


def images(dtype=torch.float32, shape=(4, 3, 16, 16), seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_registry_and_module_table_cover_every_corruption():
    assert C.CORRUPTIONS.names() == sorted(NAMES)
    assert set(C.CORRUPTION_MODULES) == set(NAMES)
    for name in NAMES:
        assert C.CORRUPTIONS.get(name) is getattr(C, name)
        assert isinstance(C.corruption_module(name, 0.1, seed=1), MODULES[name])
    with pytest.raises(KeyError, match="gaussian_noise"):
        C.corrupt("gausian_noise", images(), 0.1)


@pytest.mark.parametrize("name", NOISES)
def test_noise_is_reproducible_under_a_seed(name):
    x = images()
    f = C.CORRUPTIONS.get(name)
    a, b, c = f(x, LEVEL[name], gen(5)), f(x, LEVEL[name], gen(5)), f(x, LEVEL[name], gen(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_blur_is_deterministic():
    x = images()
    assert torch.equal(C.gaussian_blur(x, 1.0, gen(1)), C.gaussian_blur(x, 1.0, gen(2)))


@pytest.mark.parametrize("name", NAMES)
def test_function_equals_module_twin(name):
    x, level = images(), LEVEL[name]
    f = C.CORRUPTIONS.get(name)
    seeded = MODULES[name](level, seed=3)
    expected = f(x, level, gen(3))
    assert torch.equal(seeded(x), expected)
    assert torch.equal(seeded(x), expected)  # a fresh generator on every call
    assert torch.equal(MODULES[name](level)(x, gen(3)), expected)
    assert torch.equal(C.corrupt(name, x, level, gen(3)), expected)
    assert "level=" in repr(seeded)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_bounded_shape_dtype_preserved_input_untouched(name, dtype):
    x = images(dtype, shape=(3, 2, 9, 7))
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0.0, 1.0
    before = x.clone()
    for level in (LEVEL[name], 5 * LEVEL[name] if name != "impulse_noise" else 1.0):
        y = C.corrupt(name, x, level, gen(0))
        assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert not torch.equal(y, x)
    assert torch.equal(x, before)


@pytest.mark.parametrize("name", NAMES)
def test_level_zero_is_an_identical_copy(name):
    x = images()
    y = C.corrupt(name, x, 0.0, gen(0))
    assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()
    assert torch.equal(MODULES[name](0.0, seed=1)(x), x)


@pytest.mark.parametrize("name", NAMES)
def test_invalid_arguments_are_refused(name):
    f = C.CORRUPTIONS.get(name)
    with pytest.raises(ValueError, match="level"):
        f(images(), -0.1)
    with pytest.raises(ValueError, match="4-D"):
        f(images()[0], 0.1)
    with pytest.raises(ValueError, match="floating"):
        f((images() * 255).to(torch.uint8), 0.1)
    with pytest.raises(ValueError, match="level"):
        MODULES[name](float("nan"))
    if name == "impulse_noise":
        with pytest.raises(ValueError, match="<= 1"):
            f(images(), 1.5)


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5, 6.0])
def test_blur_of_a_constant_image_is_constant(sigma):
    x = torch.full((2, 3, 8, 8), 0.37, dtype=torch.float64)  # sigma 6 -> radius 18 > image
    assert torch.allclose(C.gaussian_blur(x, sigma), x, atol=1e-12)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.8])
def test_blur_matches_torchvision_reflect_blur(sigma):
    x = images(torch.float64, shape=(2, 3, 20, 17))
    ks = 2 * math.ceil(3 * sigma) + 1
    ref = tv_gaussian_blur(x, [ks, ks], [sigma, sigma])
    assert torch.allclose(C.gaussian_blur(x, sigma), ref, atol=1e-10)


def test_blur_smooths_more_at_higher_levels():
    x = images(torch.float64, shape=(2, 3, 32, 32))
    energy = [
        float(C.gaussian_blur(x, s).diff(dim=-1).pow(2).mean())
        for s in C.LEVEL_GRIDS["seed002_blur"]
    ]
    assert all(a >= b for a, b in zip(energy, energy[1:], strict=False))
    assert energy[-1] < 0.2 * energy[0]


def test_blur_kernel_is_normalised_with_radius_three_sigma():
    k = C.gaussian_kernel1d(1.2, dtype=torch.float64)
    assert k.numel() == 2 * 4 + 1
    assert math.isclose(float(k.sum()), 1.0, rel_tol=1e-12)
    assert torch.equal(k, k.flip(0))


def mid_grey(n=8, size=32):
    return torch.full((n, 3, size, size), 0.5)


@pytest.mark.parametrize("level", [0.05, 0.1, 0.15])
def test_gaussian_noise_std_matches_level(level):
    noise = C.gaussian_noise(mid_grey(), level, gen(0)) - 0.5
    assert abs(float(noise.mean())) < 0.01
    assert float(noise.std()) == pytest.approx(level, rel=0.05)


@pytest.mark.parametrize("level", [0.1, 0.3, 0.5])
def test_uniform_noise_std_and_range_match_level(level):
    noise = C.uniform_noise(mid_grey(), level, gen(0)) - 0.5
    assert float(noise.std()) == pytest.approx(level / math.sqrt(3), rel=0.05)
    assert float(noise.abs().max()) <= level + 1e-6


@pytest.mark.parametrize("level", [0.05, 0.2, 0.5])
def test_impulse_fraction_matches_level_per_pixel_across_channels(level):
    x = mid_grey()
    y = C.impulse_noise(x, level, gen(0))
    hit = y != x  # (B, C, H, W)
    per_pixel = hit.any(dim=1)
    assert torch.equal(per_pixel, hit.all(dim=1))  # a hit pixel is hit in every channel
    assert float(per_pixel.double().mean()) == pytest.approx(level, abs=0.02)
    values = y[hit]
    assert set(values.unique().tolist()) <= {0.0, 1.0}
    assert float(values.mean()) == pytest.approx(0.5, abs=0.05)  # salt and pepper balanced
    # each hit pixel is black or white in all channels at once
    assert torch.equal(y.amax(dim=1)[per_pixel], y.amin(dim=1)[per_pixel])


def test_grids_are_present_and_monotone():
    assert C.LEVEL_GRIDS["seed002_blur"] == (0, 0.1, 0.2, 0.5, 0.8, 0.9, 1, 1.2, 1.5, 1.8)
    for name in NAMES:
        assert name in C.LEVEL_GRIDS and name in C.SEVERITIES
    for name, grid in C.LEVEL_GRIDS.items():
        assert grid[0] == 0 and len(grid) >= 8, name
        assert all(a < b for a, b in zip(grid, grid[1:], strict=False)), name
    assert C.LEVEL_GRIDS["gaussian_noise"][-1] >= 0.5
    assert C.LEVEL_GRIDS["uniform_noise"][-1] >= 0.8
    assert C.LEVEL_GRIDS["impulse_noise"][-1] >= 0.5
    assert C.LEVEL_GRIDS["gaussian_blur"][-1] >= 3
    for name, sev in C.SEVERITIES.items():
        assert len(sev) == 5 and sev[0] > 0, name
        assert all(a < b for a, b in zip(sev, sev[1:], strict=False)), name
        grid = C.LEVEL_GRIDS[name]
        assert grid[0] <= sev[0] and sev[-1] <= grid[-1], name  # the grid spans the severities


def test_severities_are_the_cifar10c_constants():
    assert C.SEVERITIES["gaussian_noise"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert C.SEVERITIES["impulse_noise"] == (0.01, 0.02, 0.03, 0.05, 0.07)
    assert C.SEVERITIES["gaussian_blur"] == (0.4, 0.6, 0.7, 0.8, 1.0)
    # no uniform noise in CIFAR-10-C: same std as the Gaussian severities
    for u, g in zip(C.SEVERITIES["uniform_noise"], C.SEVERITIES["gaussian_noise"], strict=True):
        assert u / math.sqrt(3) == pytest.approx(g, rel=1e-3)


def test_corruptions_apply_to_an_empty_batch():
    x = torch.rand(0, 3, 8, 8)
    for name in NAMES:
        assert C.corrupt(name, x, LEVEL[name], gen(0)).shape == x.shape
