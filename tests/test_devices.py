"""Device names, precision checks, the config's device and the CLI's --device."""

import subprocess
import sys

import pytest
import torch

from exitwise.config import ConfigError, load_config
from exitwise.devices import (
    autocast,
    check_precision,
    describe_device,
    fork_rng,
    module_device,
    resolve_device,
    seed_rng,
)


def test_auto_is_the_best_device_here():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected
    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "cpu:0", "", "mps:1"])
def test_unknown_device_names_are_refused(name):
    with pytest.raises(ValueError, match="unknown device .*use one of auto, cpu, cuda, mps"):
        resolve_device(name)


def test_a_device_this_machine_lacks_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'cuda' was asked for but CUDA is not available.*cpu"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="'mps' was asked for but MPS is not available"):
        resolve_device("mps")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_devices_are_indexed_and_named():
    assert resolve_device("cuda") == torch.device("cuda", torch.cuda.current_device())
    assert describe_device("cuda:0") == f"cuda:0 ({torch.cuda.get_device_name(0)})"
    with pytest.raises(ValueError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_precisions():
    assert describe_device("cpu") == "cpu"
    check_precision("fp32", "cpu")
    check_precision("bf16", "cpu")  # allowed on the CPU (tests; slower than fp32 there)
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        check_precision("fp16", "cpu")
    with autocast("cpu", "bf16"):
        out = torch.nn.Linear(4, 2)(torch.ones(3, 4))
    assert out.dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert torch.nn.Linear(4, 2)(torch.ones(3, 4)).dtype == torch.float32


def test_bf16_where_it_cannot_run_is_refused(monkeypatch):
    import exitwise.devices as devices

    monkeypatch.setattr(devices, "supports_bf16", lambda device: False)
    with pytest.raises(ValueError, match="cannot run bfloat16.*use precision=fp32"):
        check_precision("bf16", "cpu")


def test_fork_and_seed_hand_the_rng_back():
    state = torch.get_rng_state()
    with fork_rng("cpu"):
        seed_rng(3)
        a = torch.rand(3)
    assert torch.equal(state, torch.get_rng_state())
    with fork_rng("cpu"):
        seed_rng(3)
        assert torch.equal(a, torch.rand(3))


def test_module_device():
    assert module_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert module_device(torch.nn.ReLU()) == torch.device("cpu")


def test_config_device_is_checked_before_anything_loads(monkeypatch):
    assert load_config().device == "auto"
    assert load_config(overrides=["device=cpu"]).device == "cpu"
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        load_config(overrides=["device=tpu"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        load_config(overrides=["device=cuda"])
    import exitwise.devices as devices

    monkeypatch.setattr(devices, "supports_bf16", lambda device: False)
    with pytest.raises(ConfigError, match="train.precision: .*bfloat16"):
        load_config(overrides=["device=cpu", "train.precision=bf16"])


def test_cli_refuses_a_bad_device_before_loading_data(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "exitwise.cli", "train", "--device", "tpu", "train.epochs=1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "unknown device 'tpu'" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written
