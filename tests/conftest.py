import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("EXITWISE_TEST_THREADS", "2")))

#: Devices the device-parametrised tests run on: the CPU, and CUDA wherever a GPU is visible.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request, monkeypatch):
    """Each of :data:`DEVICES` in turn, as a ``torch.device``.

    On CUDA, TF32 is switched off for the test: these tests compare with float32 results
    computed elsewhere (the CPU, or other batch sizes), which TF32's 10-bit mantissa would
    blur.
    """
    if request.param == "cuda":
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    return torch.device(request.param)


def build_small_net():
    """A CIFAR ResNet-20 with three BranchyNet exits at 3x16x16, 7 classes, float32."""
    from exitwise.nets import build_multi_exit

    return build_multi_exit(
        "resnet20",
        num_classes=7,
        input_shape=(3, 16, 16),
        exits_after=["layer1.1", "layer2.1", "layer3.0"],
        exit_head="branchy",
        mean=[0.5, 0.4, 0.3],
        std=[0.2, 0.25, 0.3],
        seed=0,
    )


@pytest.fixture
def small_net():
    """``build_small_net()`` in float64 (bitwise-stable routing)."""
    return build_small_net().double().eval()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(48, 3, 16, 16, generator=g, dtype=torch.float64)
