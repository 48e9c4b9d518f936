"""`exitwise edge`: options are refused before anything loads; on a small saved run it classifies
the test split against a real cloud, and falls back when none listens."""

import socket

import pytest
from typer.testing import CliRunner

from exitwise.cli import app
from exitwise.serving.server import build_app
from exitwise.training.checkpoint import load_model
from tests.serving.test_server import LoopbackServer


@pytest.fixture(scope="module")
def run_dir(small_run):
    return small_run


def _edge(*args):
    return CliRunner().invoke(app, ["edge", *map(str, args)])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cloud", "127.0.0.1:8000"], "--cloud must be a URL"),
        (["--split", "-1"], "--split must be a side exit >= 0"),
        (["--threshold", "-0.1"], "--threshold must be a number >= 0"),
        (["--samples", "0"], "--samples must be >= 1"),
        (["--token", " "], "--token must not be empty"),
        (["--timeout-s", "0"], "--timeout-s must be > 0"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--device", "tpu"], "--device: unknown device"),
    ],
)
def test_bad_options_are_refused_before_loading(tmp_path, args, message):
    base = {"--cloud": "http://127.0.0.1:1", "--split": "0", "--threshold": "0.5"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    flat = [a for kv in base.items() for a in kv]
    result = _edge(tmp_path / "missing", *flat)  # the run does not exist: checked later
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_split_beyond_the_model_is_one_line_error(run_dir):
    result = _edge(run_dir, "--cloud", "http://127.0.0.1:1", "--split", "2", "--threshold", "0.5")
    assert result.exit_code == 2 and "--split must be a side exit in 0..1" in result.output


def test_edge_against_a_real_cloud_and_against_none(run_dir):
    model = load_model(run_dir).model
    with LoopbackServer(build_app(model, limits=None)) as s:
        ok = _edge(run_dir, "--cloud", s.url, "--split", "1", "--threshold", "0.05",
                   "--samples", "20", "--batch-size", "8")  # fmt: skip
        # the untrained model's exit 0 is right on no validation image: no committee weights
        committee = _edge(run_dir, "--cloud", s.url, "--split", "1", "--threshold", "0.05",
                          "--committee")  # fmt: skip
    assert committee.exit_code == 2 and "exit 0 classifies no validation image" in committee.output
    assert ok.exit_code == 0, ok.output
    assert "on 20 images" in ok.output and "fallback 0" in ok.output
    assert "3 requests" in ok.output or "edge share 100.0%" in ok.output
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    down = _edge(run_dir, "--cloud", dead, "--split", "0", "--threshold", "2", "--samples", "5")
    assert down.exit_code == 0, down.output
    assert "fallback 5" in down.output and "cannot connect" in down.output
