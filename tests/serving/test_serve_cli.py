"""`exitwise serve`: options are checked before the model loads; a good call hands uvicorn the
app with the limits asked for."""

import pytest
import uvicorn
from typer.testing import CliRunner

from exitwise.cli import app
from exitwise.training.checkpoint import save_model
from tests.conftest import build_small_net


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("served")
    save_model(d, build_small_net())
    return d


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "0"], "--port must be in 1..65535"),
        (["--port", "70000"], "--port must be in 1..65535"),
        (["--max-body-mb", "0"], "--max-body-mb must be > 0"),
        (["--timeout-s", "-1"], "--timeout-s must be > 0"),
        (["--max-in-flight", "0"], "--max-in-flight must be >= 1"),
        (["--token", " "], "--token must not be empty"),
        (["--host", ""], "--host must be an address"),
        (["--device", "tpu"], "--device: unknown device"),
        (["--max-batch", "0"], "--max-batch must be >= 1"),
        (["--max-batch", "4", "--max-delay-ms", "-1"], "--max-delay-ms must be >= 0"),
        (["--threads", "0"], "--threads must be >= 1"),
    ],
)
def test_bad_options_are_refused_before_loading(tmp_path, args, message, monkeypatch):
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("must not serve"))
    # a run directory that does not exist: the options must be refused before it is read
    result = CliRunner().invoke(app, ["serve", str(tmp_path / "missing"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_missing_run_is_one_line_error(tmp_path):
    result = CliRunner().invoke(app, ["serve", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_serve_hands_uvicorn_the_app(run_dir, monkeypatch):
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda a, **kw: seen.update(app=a, **kw))
    args = ["serve", str(run_dir), "--port", "8123", "--token", "t", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen["port"] == 8123 and seen["host"] == "127.0.0.1"
    paths = {r.path for r in seen["app"].routes}
    assert "/v2/models/{name}/infer" in paths
