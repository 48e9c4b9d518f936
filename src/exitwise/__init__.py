"""exitwise: early-exit neural networks for computer vision, on PyTorch and torchvision.

Kept free of heavy imports so that the command line can set thread options before torch loads.
"""

__version__ = "0.1.0"
