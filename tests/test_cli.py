"""The exitwise command end to end on a tiny synthetic-signs run (real files, real report)."""

import json
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

TINY = [
    "data.options.train_per_class=6",
    "data.options.test_per_class=3",
    "data.val_fraction=0.2",
    "train.epochs=1",
    "train.batch_size=32",
    "threads=1",
]


def exitwise(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "exitwise.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    proc = exitwise("run", *TINY, f"output_dir={out}", cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_run_writes_model_evaluation_and_report(tiny_run):
    out, proc = tiny_run
    assert "report:" in proc.stdout and str(out / "report.html") in proc.stdout.replace("\n", "")
    for name in (
        "model.safetensors",
        "model.json",
        "evaluation.json",
        "report.html",
        "run_config.json",
        "train_state.safetensors",
    ):
        assert (out / name).exists(), name
    ev = json.loads((out / "evaluation.json").read_text())
    assert len(ev["exits"]) == 4
    assert set(ev["policies"]) == {
        "max_probability", "entropy", "committee", "mean_ensemble", "patience",
        "max_probability_per_exit", "max_probability_per_exit_budget",
    }  # fmt: skip
    assert len(ev["calibration"]["temperatures"]) == 4
    assert ev["dataset"]["num_samples"] == 43 * 3
    assert ev["command"].startswith("exitwise run")


def test_evaluate_a_saved_run(tiny_run):
    out, _ = tiny_run
    proc = exitwise("evaluate", str(out), "eval.policies=[max_probability]", "threads=2", cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ev = json.loads((out / "evaluation.json").read_text())
    assert list(ev["policies"]) == [
        "max_probability", "max_probability_per_exit", "max_probability_per_exit_budget",
    ]  # fmt: skip
    assert ev["training"]["threads"] == 1  # what training ran with, not this evaluation


EPOCH_LINE = re.compile(r"^epoch +\d+ \[", re.MULTILINE)  # printed after each epoch that ran


def test_rerun_resumes_instead_of_retraining(tiny_run):
    out, first = tiny_run
    assert len(EPOCH_LINE.findall(first.stdout)) == 1 and "resumed from" not in first.stdout
    state = {f: (out / f).read_bytes() for f in ("train_state.json", "train_state.safetensors")}
    weights = load_file(out / "model.safetensors")
    history = json.loads((out / "model.json").read_text())["history"]

    proc = exitwise("train", *TINY, f"output_dir={out}", cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from the checkpoint of epoch 1" in proc.stdout
    assert not EPOCH_LINE.search(proc.stdout)  # no epoch ran again
    # the resume point is untouched (an epoch that ran would rewrite it with new seconds)
    assert {f: (out / f).read_bytes() for f in state} == state
    assert json.loads((out / "model.json").read_text())["history"] == history
    again = load_file(out / "model.safetensors")
    assert again.keys() == weights.keys()
    assert all(torch.equal(again[k], weights[k]) for k in weights)


def test_unknown_key_is_a_clear_error(tmp_path):
    proc = exitwise("run", "train.epocs=1", cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown config key 'train.epocs'" in proc.stderr
    assert "Did you mean epochs" in proc.stderr


def test_a_shipped_config_is_named_without_a_path(tmp_path):
    proc = exitwise("validate", "-c", "gtsrb_branchy_resnet18", "train.epochs=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "name: gtsrb" in proc.stdout and "epochs: 2" in proc.stdout


def test_missing_dataset_is_a_clear_error(tmp_path):
    proc = exitwise("train", "data.name=gtsrb", f"data.root={tmp_path}/nothing", cwd=tmp_path)
    assert proc.returncode == 2
    assert "cannot load dataset 'gtsrb'" in proc.stderr


def test_help_explains_the_commands(tmp_path):
    proc = exitwise("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for cmd in ("run", "train", "evaluate", "validate", "info"):
        assert cmd in proc.stdout
    proc = exitwise("run", "--help", cwd=tmp_path)
    assert "synthetic-signs" in proc.stdout and "key=value" in proc.stdout


def test_info_lists_registries_and_costs(tmp_path):
    proc = exitwise("info", "--preset", "branchy_resnet18", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "resnet110" in proc.stdout and "synthetic-signs" in proc.stdout
    assert "gtsrb_branchy_resnet18, gtsrb_eenets_resnet18" in proc.stdout  # shipped configs
    assert "layer1.1" in proc.stdout and "MMACs" in proc.stdout


def test_robustness_study_end_to_end(tiny_run):
    out, _ = tiny_run
    proc = exitwise("robustness", str(out), "--samples", "8", "--quick", cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = json.loads((out / "robustness" / "study.json").read_text())
    names = {r["name"] for r in study["results"].values()}
    assert {"gaussian_noise", "gaussian_blur", "fgsm", "pgd", "deepfool", "slowdown"} <= names
    assert (out / "robustness" / "robustness.html").exists()
    assert "slowdown eps" in proc.stdout and "robustness report:" in proc.stdout
    again = exitwise("robustness", str(out), "--samples", "8", "--quick", cwd=out)
    assert again.returncode == 0 and "(resumed)" in again.stdout


def test_summary_prints_markdown_tables(tiny_run, tmp_path):
    out, _ = tiny_run
    proc = exitwise("summary", str(out), cwd=out)
    assert proc.returncode == 0, proc.stderr
    ev = json.loads((out / "evaluation.json").read_text())
    assert "| exit | after | test accuracy |" in proc.stdout
    assert f"{100 * ev['exits'][0]['accuracy']:.2f}%" in proc.stdout
    missing = exitwise("summary", str(tmp_path), cwd=tmp_path)
    assert missing.returncode == 2 and "evaluation.json does not exist" in missing.stderr


def test_compare_runs_at_equal_flops(tiny_run, tmp_path):
    out, _ = tiny_run
    other = tmp_path / "other"
    other.mkdir()
    (other / "evaluation.json").write_text((out / "evaluation.json").read_text())
    proc = exitwise(
        "compare",
        str(out),
        str(other),
        "--reference",
        str(out),
        "--budget",
        "0.5",
        "--budget",
        "1.1",
        "--goal-fraction",
        "0.3",
        "--out",
        str(tmp_path / "cmp"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cmp = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    ev = json.loads((out / "evaluation.json").read_text())
    assert cmp["reference"]["accuracy"] == ev["backbone"]["accuracy"]
    assert {r["run"] for r in cmp["at_budget"]} == {out.name, "other"}
    # Budget 110%: every point fits, so the best validation point of the sweep, for both copies.
    pol = ev["policies"]["max_probability"]
    best = max(pol["val_sweep"], key=lambda p: (p["accuracy"], -p["mean_flops"]))
    full = [r for r in cmp["at_budget"] if r["budget"] == 1.1 and r["policy"] == "max_probability"]
    assert {r["threshold"] for r in full} == {best["threshold"]} and len(full) == 2
    assert "**At equal mean FLOPs**" in proc.stdout
    assert (tmp_path / "cmp" / "comparison.png").exists()
    same = exitwise("compare", str(out), str(out), cwd=tmp_path)
    assert same.returncode == 2 and "distinct names" in same.stderr
