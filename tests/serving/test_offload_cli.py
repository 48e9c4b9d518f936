"""`exitwise offload` end to end on a small saved run: a real `exitwise serve` behind the
emulated link (network namespaces where permitted, else the relay on loopback), the link
measured, the study saved and resumed, the report written; bad options refused first."""

import json

import pytest
from typer.testing import CliRunner

from exitwise.cli import app
from exitwise.results import OffloadResult
from exitwise.serving.link import netns_available


def _offload(*args):
    return CliRunner().invoke(app, ["offload", *map(str, args)])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--link", "wifi"], "--link must be netns, loopback or auto"),
        (["--sigmas", "a,b"], "--sigmas must be comma-separated floats"),
        (["--k", "1.5"], "--k must be comma-separated ints"),
        (["--rtt-ms", "-1"], "link: LinkSpec.rtt_ms"),
        (["--iperf-seconds", "-1"], "--iperf-seconds must be >= 0"),
    ],
)
def test_bad_options_are_refused_before_loading(tmp_path, args, message):
    result = _offload(tmp_path / "missing", *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output


def test_study_over_the_link_then_resumed(small_run):
    run_dir = small_run
    args = [
        run_dir, "--link", "auto", "--sigmas", "0,1", "--alphas", "0.1", "--k", "1",
        "--methods", "max_probability", "--samples", "3", "--iperf-seconds", "0",
        "--rtt-ms", "4", "--jitter-ms", "0.2",
    ]  # fmt: skip
    result = _offload(*args)
    assert result.exit_code == 0, result.output
    out = run_dir / "offload"
    study = OffloadResult.load(out / "offload.json")
    assert len(study.rows) == 4  # 2 levels x (cloud only + one rule)
    assert all(r.fallbacks == 0 and r.live_agreement >= 2 / 3 for r in study.rows)
    assert study.link is not None and study.link.mode == (
        "netns" if netns_available()[0] else "loopback"
    )
    assert study.link.rtt_ms == 4 and study.link.measured_rtt_ms is not None
    assert study.link.measured_rtt_ms >= 4 - 1.5  # the relay's delay is on the path
    # the cloud-only request crosses the link: at least one RTT per image
    cloud = [r for r in study.rows if r.method == "cloud_only"]
    assert all(r.latency_ms >= 4 - 1.5 for r in cloud)
    link = json.loads((out / "link.json").read_text())
    assert link["spec"]["rtt_ms"] == 4 and link["throughput_mbit_mean"] is None
    for name in ("offload.html", "offload.csv", "offload_accuracy.png", "offload_latency.png"):
        assert (out / name).is_file(), name
    assert "Goals" in result.output and "Bytes on the wire" in result.output
    again = _offload(*args)  # every row saved: nothing is measured again
    assert again.exit_code == 0, again.output
    assert OffloadResult.load(out / "offload.json").rows == study.rows
