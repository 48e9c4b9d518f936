"""The report layer: figures, CSV tables and the self-contained HTML page."""

from __future__ import annotations

import copy
import csv
import io
import os
import re
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from exitwise import report  # noqa: E402
from exitwise.report import plots, write_report, write_tables  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STAGE_FLOPS = [310_378_496, 268_435_456, 268_435_456, 263_585_792]
EXIT_FLOPS = [14_030_208, 7_012_352, 3_508_224, 22_016]
EXIT_ACCURACY = [0.713, 0.862, 0.951, 0.9853]
BLOCKS = ["layer1.1", "layer2.1", "layer3.1", "final"]


def _path_flops() -> list[int]:
    out, total = [], 0
    for s, e in zip(STAGE_FLOPS, EXIT_FLOPS, strict=True):
        total += s + e
        out.append(total)
    return out


BACKBONE_FLOPS = sum(STAGE_FLOPS) + EXIT_FLOPS[-1]
PATH_FLOPS = _path_flops()


def _point(threshold: float, strictness: float) -> dict:
    """A plausible operating point: stricter thresholds push images to deeper exits."""
    raw = [
        (1 - strictness) ** 1.5 * 0.9 + 0.02,
        0.25 * strictness + 0.03,
        0.3 * strictness**2 + 0.02,
        0.4 * strictness**3 + 0.01,
    ]
    shares = [r / sum(raw) for r in raw]
    mean_flops = sum(s * p for s, p in zip(shares, PATH_FLOPS, strict=True))
    return {
        "threshold": threshold,
        "accuracy": round(0.9853 - 0.17 * (1 - strictness) ** 2.2 + 0.002 * strictness, 6),
        "mean_flops": mean_flops,
        "mean_macs": mean_flops / 2,
        "flops_fraction": mean_flops / BACKBONE_FLOPS,
        "exit_shares": shares,
    }


def _pareto(points: list[dict]) -> list[dict]:
    front: list[dict] = []
    for p in sorted(points, key=lambda q: (q["mean_flops"], -q["accuracy"])):
        if not front or p["accuracy"] > front[-1]["accuracy"]:
            front.append(p)
    return front


def _policy(label: str, thresholds: list[float], strictness: list[float]) -> dict:
    sweep = [_point(t, s) for t, s in zip(thresholds, strictness, strict=True)]
    return {"label": label, "sweep": sweep, "pareto": _pareto(sweep), "chosen": None}


def make_evaluation(title: str = "BranchyResNet18 on synthetic-signs") -> dict:
    """A 4-exit, 2-policy evaluation with 10-point sweeps, training history and a chosen point."""
    mp_t = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999]
    ent_t = [2.0, 1.5, 1.2, 1.0, 0.8, 0.6, 0.4, 0.2, 0.1, 0.05]
    strict = [i / 9 for i in range(10)]
    policies = {
        "max_probability": _policy("max softmax probability >= t", mp_t, strict),
        "entropy": _policy("softmax entropy (nats) <= t", ent_t, [s**0.8 for s in strict]),
    }
    chosen = dict(policies["max_probability"]["sweep"][6])
    chosen.update(
        rule="best val accuracy within 0.5 points of the final exit at the lowest FLOPs",
        val_accuracy=0.9801,
    )
    policies["max_probability"]["chosen"] = chosen
    oracle_shares = [0.713, 0.149, 0.089, 0.049]
    oracle_flops = sum(s * p for s, p in zip(oracle_shares, PATH_FLOPS, strict=True))
    return {
        "title": title,
        "dataset": {
            "name": "synthetic-signs",
            "split": "test",
            "num_samples": 2580,
            "num_classes": 43,
        },
        "model": {
            "name": "branchy_resnet18",
            "backbone": "resnet18",
            "num_exits": 4,
            "exit_blocks": BLOCKS,
            "num_parameters": 11_500_000,
        },
        "costs": {
            "convention": "FLOPs = 2 x MACs, counted by torch.utils.flop_counter at batch size 1",
            "input_shape": [3, 32, 32],
            "stage_flops": STAGE_FLOPS,
            "exit_flops": EXIT_FLOPS,
            "path_flops": PATH_FLOPS,
            "path_macs": [p // 2 for p in PATH_FLOPS],
            "backbone_flops": BACKBONE_FLOPS,
            "backbone_macs": BACKBONE_FLOPS // 2,
        },
        "exits": [
            {
                "exit": i,
                "block": b,
                "accuracy": a,
                "path_flops": p,
                "path_fraction": p / BACKBONE_FLOPS,
            }
            for i, (b, a, p) in enumerate(zip(BLOCKS, EXIT_ACCURACY, PATH_FLOPS, strict=True))
        ],
        "backbone": {
            "accuracy": 0.9853,
            "flops": BACKBONE_FLOPS,
            "label": "final exit only (plain backbone cost)",
        },
        "oracle": {
            "accuracy": 0.9934,
            "mean_flops": oracle_flops,
            "flops_fraction": oracle_flops / BACKBONE_FLOPS,
            "exit_shares": oracle_shares,
        },
        "policies": policies,
        "training": {
            "seconds": 512.3,
            "epochs": 10,
            "device": "cpu",
            "machine": "2-core x86_64",
            "history": [
                {
                    "epoch": e,
                    "train_loss": 4.0 / e,
                    "seconds": 51.2,
                    "val_accuracy": [a * (1 - 0.5 / e) for a in EXIT_ACCURACY],
                }
                for e in range(1, 11)
            ],
        },
        "command": "exitwise run configs/branchy_resnet18.yaml --out runs/r18",
        "notes": ["Synthetic data: numbers are illustrative.", "Thresholds picked on val."],
    }


def make_minimal_evaluation() -> dict:
    """The same without the optional parts: no training, no chosen point, no command or notes."""
    ev = make_evaluation()
    for key in ("training", "command", "notes"):
        del ev[key]
    for policy in ev["policies"].values():
        policy.pop("chosen")
    return ev


@pytest.fixture
def evaluation() -> dict:
    return make_evaluation()


@dataclass
class Rendered:
    """A report written once for the whole module, with what happened around the call."""

    path: Path
    output: str
    warnings: list[str]
    figures_left_open: set[int]
    input_modified: bool


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    evaluation = make_evaluation()
    before, figures = copy.deepcopy(evaluation), set(plt.get_fignums())
    buf = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, redirect_stdout(buf), redirect_stderr(buf):
        warnings.simplefilter("always")
        path = write_report(evaluation, tmp_path_factory.mktemp("full"))
    return Rendered(
        path,
        buf.getvalue(),
        [str(w.message) for w in caught],
        set(plt.get_fignums()) - figures,
        evaluation != before,
    )


@pytest.fixture(scope="module")
def full_report(rendered: Rendered) -> Path:
    return rendered.path


@pytest.fixture(scope="module")
def minimal_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(make_minimal_evaluation(), tmp_path_factory.mktemp("minimal"))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------- files


def test_report_files_exist(full_report: Path) -> None:
    out = full_report.parent
    assert full_report.name == "report.html"
    expected = {
        "report.html",
        "exit_costs.png",
        "accuracy_vs_flops.png",
        "exit_shares.png",
        "training.png",
        "exits.csv",
        "sweep_max_probability.csv",
        "pareto_max_probability.csv",
        "sweep_entropy.csv",
        "pareto_entropy.csv",
    }
    assert {p.name for p in out.iterdir()} == expected  # and no temporary files left


def test_no_training_figure_without_history(minimal_report: Path) -> None:
    names = {p.name for p in minimal_report.parent.iterdir()}
    assert "training.png" not in names
    assert {"exit_costs.png", "accuracy_vs_flops.png", "exit_shares.png"} <= names


@pytest.mark.parametrize(
    "name", ["exit_costs.png", "accuracy_vs_flops.png", "exit_shares.png", "training.png"]
)
def test_pngs_are_valid(full_report: Path, name: str) -> None:
    path = full_report.parent / name
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000
    image = plt.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 300 and image.shape[1] > 600


def test_render_is_quiet_and_tidy(rendered: Rendered) -> None:
    assert rendered.output == ""  # no print, nothing on stderr
    assert rendered.warnings == []
    assert rendered.figures_left_open == set()
    assert not rendered.input_modified


# -------------------------------------------------------------------------------------- html


@pytest.mark.parametrize("fixture", ["full_report", "minimal_report"])
def test_html_is_self_contained(fixture: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(fixture)
    page = path.read_text(encoding="utf-8")
    pngs = sorted(p.name for p in path.parent.glob("*.png"))
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == len(pngs) >= 3
    for marker in (
        'src="http',
        "src='http",
        'href="http',
        "url(http",
        "@import",
        "<link",
        "<script",
    ):
        assert marker not in page
    assert re.search(r"\bsrc=\"(?!data:)", page) is None


def test_html_content(full_report: Path, evaluation: dict) -> None:
    page = full_report.read_text(encoding="utf-8")
    assert "BranchyResNet18 on synthetic-signs" in page
    assert "synthetic-signs" in page and "branchy_resnet18" in page
    assert "exitwise run configs/branchy_resnet18.yaml --out runs/r18" in page
    for ex in evaluation["exits"]:
        assert f"{100 * ex['accuracy']:.1f}%" in page
    assert "1.11 GFLOPs" in page  # the backbone in the headline
    assert "FLOPs = 2 x MACs" in page
    assert "8 min 32 s" in page and "2-core x86_64" in page
    assert "Synthetic data: numbers are illustrative." in page
    chosen = evaluation["policies"]["max_probability"]["chosen"]
    assert f"t = {chosen['threshold']:g}" in page
    assert f"{100 * chosen['accuracy']:.1f}%" in page
    for name in evaluation["policies"]:
        assert f"<h3>{name}</h3>" in page


def test_html_escapes_strings(evaluation: dict, tmp_path: Path) -> None:
    evaluation["title"] = "<script>alert('x')</script> & co"
    evaluation["notes"] = ['<img src="http://evil/x.png">']
    evaluation["exits"][0]["block"] = "layer<1>"
    page = write_report(evaluation, tmp_path).read_text(encoding="utf-8")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in page
    assert '<img src="http' not in page and "layer&lt;1&gt;" in page


# -------------------------------------------------------------------------------------- csv


def test_sweep_csv_round_trips(full_report: Path, evaluation: dict) -> None:
    out = full_report.parent
    for name, policy in evaluation["policies"].items():
        for kind in ("sweep", "pareto"):
            rows = _read_csv(out / f"{kind}_{name}.csv")
            points = policy[kind]
            assert len(rows) == len(points)
            for row, point in zip(rows, points, strict=True):
                for key in ("threshold", "accuracy", "mean_flops", "mean_macs", "flops_fraction"):
                    assert float(row[key]) == point[key]
                shares = [float(row[f"share_exit_{i}"]) for i in range(4)]
                assert shares == point["exit_shares"]


def test_exits_csv(full_report: Path, evaluation: dict) -> None:
    rows = _read_csv(full_report.parent / "exits.csv")
    assert list(rows[0]) == [
        "exit",
        "block",
        "accuracy",
        "path_flops",
        "path_macs",
        "path_fraction",
    ]
    assert len(rows) == 4
    for row, ex, macs in zip(
        rows, evaluation["exits"], evaluation["costs"]["path_macs"], strict=True
    ):
        assert int(row["exit"]) == ex["exit"] and row["block"] == ex["block"]
        assert float(row["accuracy"]) == ex["accuracy"]
        assert int(row["path_flops"]) == ex["path_flops"] and int(row["path_macs"]) == macs
        assert float(row["path_fraction"]) == ex["path_fraction"]


def test_write_tables_only_csvs(evaluation: dict, tmp_path: Path) -> None:
    paths = write_tables(evaluation, tmp_path / "new")
    assert [p.name for p in paths][0] == "exits.csv"
    assert {p.suffix for p in paths} == {".csv"} and len(paths) == 5
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(p.name for p in paths)


# ------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (["costs", "path_flops"], "evaluation['costs']['path_flops'] is missing"),
        (["title"], "evaluation['title'] is missing"),
        (["oracle"], "evaluation['oracle'] is missing"),
        (["exits", 2, "accuracy"], "evaluation['exits'][2]['accuracy'] is missing"),
        (
            ["policies", "entropy", "sweep", 3, "mean_flops"],
            "evaluation['policies']['entropy']['sweep'][3]['mean_flops'] is missing",
        ),
    ],
)
def test_missing_key_names_its_path(
    evaluation: dict, tmp_path: Path, path: list, message: str
) -> None:
    node = evaluation
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    with pytest.raises(ValueError, match=re.escape(message)):
        write_report(evaluation, tmp_path)
    with pytest.raises(ValueError, match=re.escape(message)):
        write_tables(evaluation, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_wrong_number_of_exit_shares(evaluation: dict, tmp_path: Path) -> None:
    evaluation["oracle"]["exit_shares"] = [1.0]
    with pytest.raises(ValueError, match=r"evaluation\['oracle'\]\['exit_shares'\] has 1"):
        write_report(evaluation, tmp_path)


# ------------------------------------------------------------------------------- atomicity


def test_plot_failure_leaves_no_report(
    evaluation: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(_evaluation: dict) -> None:
        plt.figure()  # a figure left open by the failing builder must still be closed
        raise RuntimeError("plotting failed")

    before = set(plt.get_fignums())
    monkeypatch.setattr(plots, "exit_costs_figure", boom)
    with pytest.raises(RuntimeError, match="plotting failed"):
        write_report(evaluation, tmp_path)
    assert not (tmp_path / "report.html").exists()
    assert list(tmp_path.iterdir()) == []
    assert set(plt.get_fignums()) == before


@pytest.mark.parametrize("stage", ["plot", "page"])
def test_failed_rewrite_keeps_previous_page(
    evaluation: dict, tmp_path: Path, stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = b"<!DOCTYPE html><title>previous run</title>"
    (tmp_path / "report.html").write_bytes(previous)

    def boom(*_args: object) -> None:
        raise RuntimeError(f"{stage} failed")

    if stage == "plot":
        monkeypatch.setattr(plots, "exit_costs_figure", boom)
    else:
        monkeypatch.setattr(plots, "render_figures", lambda _ev: {"exit_costs.png": b"png"})
        monkeypatch.setattr(report.html, "render_html", boom)
    with pytest.raises(RuntimeError, match=f"{stage} failed"):
        write_report(evaluation, tmp_path)
    assert (tmp_path / "report.html").read_bytes() == previous
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary files


def test_interrupted_write_leaves_no_temporary(
    evaluation: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_tables(evaluation, tmp_path)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- edge cases


def test_headline_point_without_chosen(evaluation: dict) -> None:
    policy = evaluation["policies"]["entropy"]
    ref = evaluation["backbone"]["accuracy"]
    point, reason = report.html.headline_point(policy, ref)
    near = [p for p in policy["sweep"] if p["accuracy"] >= ref - 0.005]
    assert point is min(near, key=lambda p: p["mean_flops"])
    assert reason.startswith("cheapest")
    chosen = evaluation["policies"]["max_probability"]["chosen"]
    assert report.html.headline_point(evaluation["policies"]["max_probability"], ref) == (
        chosen,
        "chosen",
    )


def test_degenerate_sweeps_plot_without_warnings(evaluation: dict, tmp_path: Path) -> None:
    """One policy with a single sweep point, plus thresholds past 1 (everyone at the last exit)."""
    lone = _point(0.9, 0.5)
    evaluation["policies"] = {"max prob/odd": {"sweep": [lone], "pareto": [lone]}}
    evaluation["policies"]["grid"] = _policy(
        "t", [0.0, 0.5, 0.99, 0.9999, 1.0, 1.01], [0.0, 0.1, 0.6, 0.9, 1.0, 1.0]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for build in (plots.accuracy_vs_flops_figure, plots.exit_shares_figure):
            fig = build(evaluation)
            try:
                fig.canvas.draw()
            finally:
                plt.close(fig)
    names = {p.name for p in write_tables(evaluation, tmp_path)}
    assert {"sweep_max_prob_odd.csv", "pareto_max_prob_odd.csv", "sweep_grid.csv"} <= names
