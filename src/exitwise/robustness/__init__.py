"""Robustness of early-exit networks: common corruptions and adversarial attacks (seed 000,
Figs. 5 and 6).

* :mod:`exitwise.robustness.corruptions`: Gaussian, uniform and impulse noise and Gaussian blur
  on pixel-space batches in [0, 1], with level grids and the CIFAR-10-C severities
  (Hendrycks & Dietterich, ICLR 2019).
* :mod:`exitwise.robustness.attacks`: FGSM, BIM, PGD, DeepFool and the DeepSloth slowdown attack,
  aimed at one exit, the last exit, every exit, or the routed early-exit model.
"""

from exitwise.robustness.attacks import (
    BIM,
    FGSM,
    PGD,
    TARGETS,
    Attack,
    DeepFool,
    Slowdown,
    attack_success_rate,
    routed_log_probs,
)
from exitwise.robustness.corruptions import (
    CORRUPTION_MODULES,
    CORRUPTIONS,
    LEVEL_GRIDS,
    SEVERITIES,
    Corruption,
    GaussianBlur,
    GaussianNoise,
    ImpulseNoise,
    UniformNoise,
    corrupt,
    corruption_module,
    gaussian_blur,
    gaussian_kernel1d,
    gaussian_noise,
    impulse_noise,
    uniform_noise,
)

__all__ = [
    "Attack",
    "FGSM",
    "BIM",
    "PGD",
    "DeepFool",
    "Slowdown",
    "TARGETS",
    "attack_success_rate",
    "routed_log_probs",
    "CORRUPTIONS",
    "CORRUPTION_MODULES",
    "LEVEL_GRIDS",
    "SEVERITIES",
    "Corruption",
    "GaussianNoise",
    "UniformNoise",
    "ImpulseNoise",
    "GaussianBlur",
    "corrupt",
    "corruption_module",
    "gaussian_noise",
    "uniform_noise",
    "impulse_noise",
    "gaussian_blur",
    "gaussian_kernel1d",
]
