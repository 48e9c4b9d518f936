"""The robustness report: figures, CSV tables and the self-contained robustness.html."""

from __future__ import annotations

import base64
import csv
import io
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from exitwise.experiments.robustness import slowdown_summary  # noqa: E402
from exitwise.report import robustness, write_robustness_report  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PATH_FRACTION = [0.28, 0.55, 0.81, 1.013]  # FLOPs to reach each exit, as a share of the backbone
BACKBONE_FLOPS = 1_110_879_232
CLEAN_ACCURACY = [0.713, 0.862, 0.951, 0.9853]
CAP_EXIT = 1
FIGURES = (
    "robustness_corruptions.png",
    "robustness_attacks.png",
    "robustness_exit_shares.png",
    "slowdown.png",
)
DISTURBANCES = [  # (name, target, levels, how hard the strongest level hits)
    ("gaussian_noise", None, [0.0, 0.05, 0.1, 0.2], 0.9),
    ("impulse_noise", None, [0.0, 0.02, 0.05, 0.1], 0.7),
    ("fgsm", "final", [0.0, 2 / 255, 8 / 255], 1.0),
    ("deepfool", "final", [0, 3, 10], 1.0),
    ("slowdown", "all", [0.0, 4 / 255, 8 / 255], 0.3),
]
ATTACKS = ("fgsm", "bim", "pgd", "deepfool", "slowdown")


def _point(shares: list[float], accuracy: float) -> dict:
    fraction = sum(s * f for s, f in zip(shares, PATH_FRACTION, strict=True))
    return {
        "accuracy": accuracy,
        "mean_flops": fraction * BACKBONE_FLOPS,
        "flops_fraction": fraction,
        "exit_shares": shares,
    }


def _result(name: str, target: str | None, level: float, severity: float) -> dict:
    """A plausible row: corruptions hurt shallow exits most, attacks on the final exit hurt it
    most; harder inputs make the exits less confident and push samples deeper."""
    attack = name in ATTACKS
    chance = 0.1
    exit_acc = []
    for i, clean in enumerate(CLEAN_ACCURACY):
        if name == "slowdown":
            hit = 0.15 * severity
        elif attack:  # the final exit is the target; the shallow ones are hit by transfer
            hit = severity**0.8 * (0.45 + 0.55 * i / 3)
        else:
            hit = min(1.0, severity * (1.3 - 0.3 * i / 3)) ** 1.6
        exit_acc.append(round(chance + (clean - chance) * (1 - hit), 6))
    deep = min(severity * (2.5 if name == "slowdown" else 1.1), 1.0)
    raw = [0.55 * (1 - deep) + 0.02, 0.2 * (1 - 0.5 * deep), 0.12 + 0.3 * deep, 0.13 + 0.6 * deep]
    shares = [round(r / sum(raw), 6) for r in raw]
    early = sum(shares[:3])
    routed_acc = exit_acc[-1] - 0.004 - 0.03 * severity * early
    if attack and name != "slowdown":  # samples leaving early dodge the attack on the final exit
        routed_acc += 0.5 * early * max(0.0, exit_acc[1] - exit_acc[-1])
    routed = _point(shares, round(max(routed_acc, exit_acc[-1] - 0.05), 6))
    capped_shares = [shares[0], round(1 - shares[0], 6), 0.0, 0.0]
    capped = _point(capped_shares, round(exit_acc[1] * 0.6 + routed_acc * 0.4, 6))
    key = name if target is None else f"{name}[{target}]"
    return {
        "exit_accuracy": exit_acc,
        "backbone_accuracy": exit_acc[-1],
        "backbone_flops": BACKBONE_FLOPS,
        "routed": routed,
        "capped": capped,
        "disturbance": key,
        "name": name,
        "kind": "attack" if attack else "corruption",
        "level": level,
    }


def make_study(title: str = "BranchyResNet18 on synthetic-signs: robustness") -> dict:
    """2 corruptions x 4 levels, 2 attacks x 3 levels, slowdown x 3 levels; 4 exits, capped."""
    results = {}
    for name, target, levels, strength in DISTURBANCES:
        key = name if target is None else f"{name}[{target}]"
        for level in levels:
            severity = strength * float(level) / float(max(levels))
            results[f"{key}@{level:g}"] = _result(name, target, level, severity)
    study = {
        "title": title,
        "dataset": "synthetic-signs (test split)",
        "command": "exitwise robustness --config configs/seed000.yaml",
        "notes": ["Synthetic numbers for the tests.", "Levels follow LEVEL_GRIDS."],
        "config": {
            "policy": "MaxProbability(threshold=0.9, temperature=1.0)",
            "cap_exit": CAP_EXIT,
            "seed": 0,
            "num_samples": 500,
            "disturbances": [
                {"name": n, "levels": list(lv), "target": t or "final"}
                for n, t, lv, _ in DISTURBANCES
            ],
        },
        "results": results,
    }
    study["slowdown"] = slowdown_summary(study)
    return study


@pytest.fixture
def study() -> dict:
    return make_study()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    study = make_study()
    out = tmp_path_factory.mktemp("robustness")
    page = write_robustness_report(study, out)
    assert page == out / "robustness.html"
    return study, out


def _read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


# ---------------------------------------------------------------------------------- files


def test_files_exist(written: tuple[dict, Path]) -> None:
    _, out = written
    names = {p.name for p in out.iterdir()}
    assert names == {"robustness.html", "robustness.csv", "slowdown.csv", *FIGURES}


@pytest.mark.parametrize("name", FIGURES)
def test_pngs_are_valid(written: tuple[dict, Path], name: str) -> None:
    path = written[1] / name
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = plt.imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600


def test_html_embeds_every_figure(written: tuple[dict, Path]) -> None:
    _, out = written
    page = (out / "robustness.html").read_text()
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == len(FIGURES)
    assert {base64.b64decode(u) for u in uris} == {(out / n).read_bytes() for n in FIGURES}
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert len(re.findall(r"\bsrc=", page)) == len(FIGURES)


def test_html_shows_numbers_as_percentages(written: tuple[dict, Path]) -> None:
    study, out = written
    page = (out / "robustness.html").read_text()
    r = study["results"]["gaussian_noise@0.1"]
    assert f"{100 * r['routed']['accuracy']:.1f}%" in page
    assert f"{100 * r['backbone_accuracy']:.1f}%" in page
    # the headline quotes the mildest level costing the backbone 5 points, and the FLOPs spent
    # going from the clean level to it
    rows = [study["results"][f"gaussian_noise@{lv:g}"] for lv in (0.0, 0.05, 0.1, 0.2)]
    quoted = next(q for q in rows if q["backbone_accuracy"] <= rows[0]["backbone_accuracy"] - 0.05)
    clean, flops = rows[0]["routed"]["flops_fraction"], quoted["routed"]["flops_fraction"]
    assert f"{100 * clean:.0f}% \u2192 {100 * flops:.0f}%</b>" in page
    assert f"{100 * quoted['routed']['accuracy']:.1f}%" in page
    last = study["slowdown"][-1]
    assert f"erases <b>{100 * last['routed']['saving_erased']:.0f}%</b>" in page
    assert (
        f"cap at exit {CAP_EXIT} keeps it to <b>{100 * last['capped']['saving_erased']:.0f}%"
        in (page)
    )
    for text in ("eps 8/255", "FGSM on the final exit", "10 iterations", "Notes"):
        assert text in page
    assert "MaxProbability(threshold=0.9, temperature=1.0)" in page
    assert "<b>500</b> evaluation images" in page


def test_html_escapes_strings(study: dict, tmp_path: Path) -> None:
    study["title"] = "<script>alert('x')</script> & co"
    study["notes"] = ["<b>not bold</b>"]
    study["command"] = 'run --name "<i>"'
    page = write_robustness_report(study, tmp_path).read_text()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in page
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page
    assert "&quot;&lt;i&gt;&quot;" in page


# ---------------------------------------------------------------------------------- tables


def test_results_csv_round_trips(written: tuple[dict, Path]) -> None:
    study, out = written
    rows = _read_csv(out / "robustness.csv")
    assert len(rows) == len(study["results"]) == 2 * 4 + 2 * 3 + 3
    for row in rows:
        r = study["results"][f"{row['disturbance']}@{float(row['level']):g}"]
        assert [float(row[f"accuracy_exit_{i}"]) for i in range(4)] == r["exit_accuracy"]
        assert float(row["backbone_accuracy"]) == r["backbone_accuracy"]
        for mode in ("routed", "capped"):
            assert float(row[f"{mode}_accuracy"]) == r[mode]["accuracy"]
            assert float(row[f"{mode}_flops_fraction"]) == r[mode]["flops_fraction"]
            shares = [float(row[f"{mode}_share_exit_{i}"]) for i in range(4)]
            assert shares == r[mode]["exit_shares"]
    # grouped by disturbance in study order, each sorted by level
    order = [row["disturbance"] for row in rows]
    assert order[:4] == ["gaussian_noise"] * 4 and order[-3:] == ["slowdown[all]"] * 3
    fgsm = [row for row in rows if row["name"] == "fgsm"]
    assert [float(row["level_shown"]) for row in fgsm] == [0.0, 2.0, 8.0]
    assert {row["level_unit"] for row in fgsm} == {"1/255"}
    assert {row["level_unit"] for row in rows if row["name"] == "deepfool"} == {"iterations"}


def test_slowdown_csv_round_trips(written: tuple[dict, Path]) -> None:
    study, out = written
    rows = _read_csv(out / "slowdown.csv")
    assert len(rows) == len(study["slowdown"]) == 3
    for row, entry in zip(rows, study["slowdown"], strict=True):
        assert float(row["eps"]) == entry["eps"]
        for mode in ("routed", "capped"):
            for key in ("accuracy", "flops_fraction", "saving", "saving_erased"):
                assert float(row[f"{mode}_{key}"]) == entry[mode][key]
    assert [float(row["eps_255"]) for row in rows] == [0.0, 4.0, 8.0]


def test_study_without_attacks_or_slowdown(study: dict, tmp_path: Path) -> None:
    study["results"] = {k: v for k, v in study["results"].items() if v["kind"] == "corruption"}
    study["slowdown"] = []
    for r in study["results"].values():
        del r["capped"]
    write_robustness_report(study, tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {
        "robustness.html",
        "robustness.csv",
        "robustness_corruptions.png",
        "robustness_exit_shares.png",
    }
    header = (tmp_path / "robustness.csv").read_text().splitlines()[0]
    assert "capped" not in header


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (["config", "policy"], "study['config']['policy'] is missing"),
        (["results", "gaussian_noise@0.1", "level"], "['gaussian_noise@0.1']['level'] is missing"),
        (
            ["results", f"fgsm[final]@{8 / 255:g}", "routed", "flops_fraction"],
            f"study['results']['fgsm[final]@{8 / 255:g}']['routed']['flops_fraction'] is missing",
        ),
        (["slowdown", 1, "capped", "saving_erased"], "study['slowdown'][1]['capped']"),
    ],
)
def test_missing_key_names_its_path(study: dict, tmp_path: Path, path: list, message: str) -> None:
    node = study
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    with pytest.raises(ValueError, match=re.escape(message)):
        write_robustness_report(study, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_wrong_number_of_exit_shares(study: dict, tmp_path: Path) -> None:
    study["results"]["impulse_noise@0.05"]["routed"]["exit_shares"] = [0.5, 0.5]
    with pytest.raises(ValueError, match=r"\['impulse_noise@0.05'\]\['routed'\]\['exit_shares'\]"):
        write_robustness_report(study, tmp_path)


def test_plot_failure_leaves_no_page(
    study: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(_study: dict) -> None:
        plt.figure()  # a figure left open by the failing builder must still be closed
        raise RuntimeError("plotting failed")

    before = set(plt.get_fignums())
    monkeypatch.setattr(robustness, "slowdown_figure", boom)
    with pytest.raises(RuntimeError, match="plotting failed"):
        write_robustness_report(study, tmp_path)
    assert not (tmp_path / "robustness.html").exists()
    assert list(tmp_path.iterdir()) == []
    assert set(plt.get_fignums()) == before


def test_labels() -> None:
    assert robustness.disturbance_label("pgd[final]") == "PGD on the final exit"
    assert robustness.disturbance_label("slowdown[all]") == "Slowdown (DeepSloth) on all exits"
    assert robustness.disturbance_label("fgsm[2]") == "FGSM on exit 2"
    assert robustness.disturbance_label("gaussian_noise") == "Gaussian noise"
    assert robustness.disturbance_label("shot_noise") == "Shot noise"
