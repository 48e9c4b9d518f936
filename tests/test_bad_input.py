"""Every verb refuses bad input the same way: before it loads data or writes a file, with exit
status 2, ONE line on stderr that says what it expected and what arrived, no traceback, and every
file as it was.

One table per verb. Each row: the arguments (``{run}`` is a copy of a tiny trained run, ``{tmp}``
the test's folder, which is also the working directory), a setup that damages files, and a
fragment of the expected message. The run directory is trained once, in seconds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from exitwise.cli import app
from tests.test_cli import TINY as CLI_TINY

TINY = [
    *CLI_TINY,
    # a CIFAR ResNet-20 with three exits: 1 MB of weights, so every row copies the run quickly
    "model.preset=null",
    "model.options.backbone=resnet20",
    "model.options.exits_after=[layer1.0,layer2.0,layer3.0]",
]


def cli(*args: str):
    """The command in this process; the torch thread count it sets (threads=...) is restored."""
    threads = torch.get_num_threads()
    try:
        return CliRunner().invoke(app, list(args))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny synthetic-signs run: `exitwise train`, then evaluation.json from the study (the
    report pages are not needed here)."""
    from exitwise.config import load_config
    from exitwise.experiments import efficiency_study
    from exitwise.experiments.pipeline import load_data
    from exitwise.training import load_model

    out = tmp_path_factory.mktemp("bad-input") / "run"
    result = cli("train", *TINY, f"output_dir={out}")
    assert result.exit_code == 0, result.output
    cfg = load_config(None, [*TINY, f"output_dir={out}"])
    ev = efficiency_study(load_model(out).model, load_data(cfg), cfg.eval.policies)
    ev.save(out / "evaluation.json")
    return out


def snapshot(root: Path) -> dict[str, str]:
    """Every file's hash and every folder under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "folder"
        for p in sorted(root.rglob("*"))
    }


def check_refused(args: list[str], setup: Callable | None, fragment: str, trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    if setup is not None:
        setup(run, tmp_path)
    args = [a.format(run=run, tmp=tmp_path) for a in args]
    before = snapshot(tmp_path)
    result = cli(*args)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment.format(run=run, tmp=tmp_path) in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert snapshot(tmp_path) == before, "a refused command changed files"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative output folders land where snapshot() sees them


# --- ways to damage a run ---------------------------------------------------------------------


def write(name: str, text: str | bytes) -> Callable:
    def setup(run: Path, tmp: Path) -> None:
        path = (run if not name.startswith("/") else tmp) / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)

    return setup


def truncate(name: str) -> Callable:
    def setup(run: Path, tmp: Path) -> None:
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[: len(data) // 2])

    return setup


def delete(*names: str) -> Callable:
    def setup(run: Path, tmp: Path) -> None:
        for name in names:
            (run / name).unlink()

    return setup


def edit_json(name: str, change: Callable[[dict], None]) -> Callable:
    def setup(run: Path, tmp: Path) -> None:
        data = json.loads((run / name).read_text())
        change(data)
        (run / name).write_text(json.dumps(data))

    return setup


def chain(*setups: Callable) -> Callable:
    def setup(run: Path, tmp: Path) -> None:
        for s in setups:
            s(run, tmp)

    return setup


def model_config(**changes) -> Callable:
    return edit_json("model.json", lambda m: m["model_config"].update(changes))


def run_config(section: str, **changes) -> Callable:
    return edit_json("run_config.json", lambda c: c[section].update(changes))


def empty_folder(run: Path, tmp: Path) -> None:
    (tmp / "empty").mkdir()


GARBAGE = "{not json"
OUT = "output_dir={run}"
OUT_NEW = "output_dir={tmp}/new"

# --- run / train: the config, and the run already in output_dir ------------------------------

CONFIG_ROWS = [
    ([*TINY, "train.epochs=1.5", OUT_NEW], None, "'train.epochs' expects an integer, got 1.5"),
    ([*TINY, "train.epochs=-1", OUT_NEW], None, "train.epochs must be >= 0, got -1"),
    ([*TINY, "train.epocs=2", OUT_NEW], None, "unknown config key 'train.epocs'"),
    ([*TINY, "data.options.foo=1", OUT_NEW], None, "takes no option 'foo'"),
    ([*TINY, "model.preset=branchy", OUT_NEW], None, "unknown preset 'branchy'"),
    ([*TINY, "data.name=signs", OUT_NEW], None, "unknown dataset 'signs'"),
    ([*TINY, "eval.policies=[maxprob]", OUT_NEW], None, "unknown exit policy 'maxprob'"),
    ([*TINY, "--device", "quantum", OUT_NEW], None, "unknown device 'quantum'"),
    ([*TINY, "output_dir={tmp}/file"], write("/file", "x"), "is a file; expected a folder"),
    (["-c", "{tmp}/bad.yaml", OUT_NEW], write("/bad.yaml", "train:\n  epochs: 2\n lr: 1\n"),
     "bad.yaml is not valid YAML at line 3"),
    (["-c", "gtsrb_branchy", OUT_NEW], None, "Did you mean gtsrb_branchy_resnet18"),
    (["data.name=gtsrb", "data.root={tmp}/nothing", OUT_NEW], None,
     "cannot load dataset 'gtsrb'"),
    # a run is in output_dir: resumed only with the same data, model and training config
    ([*TINY, "train.lr=0.1", OUT], None,
     "holds a run trained with train.lr=0.05, but this config has train.lr=0.1"),
    ([*TINY, "data.seed=1", OUT], None, "holds a run trained with data.seed=0"),
    ([*TINY, OUT], write("run_config.json", GARBAGE), "run_config.json is not valid JSON"),
    ([*TINY, OUT], run_config("train", epochs="x"), "run_config.json: 'train.epochs' expects"),
    ([*TINY, OUT], truncate("train_state.safetensors"),
     "train_state.safetensors is not a readable safetensors file"),
    ([*TINY, OUT], edit_json("train_state.json", lambda m: m.update(token="0")),
     "do not belong together"),
    ([*TINY, OUT], chain(delete("run_config.json"), edit_json(
        "train_state.json", lambda m: m["train_config"].update(lr=0.5))),
     "train_state.json was trained with train.lr=0.5"),
    # found once the data gives the model its shape, still before anything is written
    ([*TINY, "data.options.image_size=24", OUT], delete("run_config.json"),
     "is a checkpoint of another model (model_config.input_shape"),
    ([*TINY, "model.options.exits_after=[nope]", OUT_NEW], None,
     "model.options: unknown block name(s) ['nope']"),
]  # fmt: skip


@pytest.mark.parametrize("args, setup, fragment", CONFIG_ROWS)
def test_run_refuses_bad_input(args, setup, fragment, trained, tmp_path):
    check_refused(["run", *args], setup, fragment, trained, tmp_path)


@pytest.mark.parametrize("args, setup, fragment", CONFIG_ROWS)
def test_train_refuses_bad_input(args, setup, fragment, trained, tmp_path):
    check_refused(["train", *args], setup, fragment, trained, tmp_path)


# --- evaluate / robustness: a trained run's files --------------------------------------------

RUN_DIR_ROWS = [
    (["{tmp}/missing"], None, "missing does not exist; expected a run directory"),
    (["{tmp}/file"], write("/file", "x"), "file is a file; expected a run directory"),
    (["{tmp}/empty"], empty_folder, "holds no trained model (model.json missing)"),
    (["{run}"], truncate("model.safetensors"), "model.safetensors is not a readable safetensors"),
    (["{run}"], write("model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}"),
     "model.safetensors is not a readable safetensors"),
    (["{run}"], write("model.json", GARBAGE), "model.json is not valid JSON (line 1"),
    (["{run}"], write("model.json", "[1, 2]"), "model.json holds a JSON list"),
    (["{run}"], edit_json("model.json", lambda m: m.update(format="other/9")),
     "expected format 'exitwise.model/1', got 'other/9'"),
    (["{run}"], edit_json("model.json", lambda m: m.update(token="0")), "do not belong together"),
    (["{run}"], model_config(backbone="resnet99"), "model_config does not build a model"),
    (["{run}"], model_config(num_classes=10),
     "does not fit {run}/model.json: "),
    (["{run}"], write("run_config.json", GARBAGE), "run_config.json is not valid JSON"),
    (["{run}"], run_config("data", seed="zero"), "run_config.json: 'data.seed' expects an integer"),
    (["{run}"], run_config("data", name="gtsrb", options={}),
     "model.json was trained on 'synthetic-signs', but the config names data.name='gtsrb'"),
    # found once the data is loaded, still before anything is written
    (["{run}"], model_config(input_shape=[3, 24, 24]),
     "the model takes images of shape [3, 24, 24] but synthetic-signs's are [3, 32, 32]"),
]  # fmt: skip


@pytest.mark.parametrize(
    "args, setup, fragment",
    [
        *RUN_DIR_ROWS,
        (["{run}", "eval.tolerance=2"], None, "eval.tolerance must be in [0, 1), got 2"),
        (["{run}", "eval.policies=[entropie]"], None, "Did you mean 'entropy'"),
        (["{run}", "data.name=mnist"], None, "dataset 'mnist' takes no option"),
        (["{run}", "--device", "quantum"], None, "unknown device 'quantum'"),
    ],
)
def test_evaluate_refuses_bad_input(args, setup, fragment, trained, tmp_path):
    check_refused(["evaluate", *args], setup, fragment, trained, tmp_path)


@pytest.mark.parametrize(
    "args, setup, fragment",
    [
        *RUN_DIR_ROWS,
        (["{run}", "--samples", "-5"], None, "--samples must be a positive number"),
        (["{run}", "--samples", "0"], None, "--samples must be a positive number"),
        (["{run}", "--cap-exit", "7"], None, "--cap-exit must be a side exit in 0..2"),
        (["{run}", "--threshold", "2"], None, "--threshold is a max-probability in [0, 1]"),
        (["{run}"], write("robustness", "x"), "robustness is a file; expected the study's folder"),
        (["{run}"], write("evaluation.json", GARBAGE), "evaluation.json"),
        (["{run}"], write("evaluation.json", '{"title": "old"}'), "evaluation.json"),
    ],
)
def test_robustness_refuses_bad_input(args, setup, fragment, trained, tmp_path):
    check_refused(["robustness", "--quick", *args], setup, fragment, trained, tmp_path)


# --- summary / compare: evaluation.json ------------------------------------------------------

EVALUATION_ROWS = [
    (["{tmp}/missing"], None, "evaluation.json does not exist"),
    (["{tmp}/empty"], empty_folder, "evaluation.json does not exist"),
    (["{run}"], write("evaluation.json", GARBAGE), "evaluation.json"),
    (["{run}"], write("evaluation.json", "[]"), "evaluation.json"),
    (["{run}"], write("evaluation.json", '{"title": "old", "exits": []}'), "evaluation.json"),
    (["{run}"], edit_json("evaluation.json", lambda e: e.update(exits="none")), "evaluation.json"),
]


@pytest.mark.parametrize(
    "args, setup, fragment",
    [*EVALUATION_ROWS, (["{run}", "{tmp}/missing"], None, "evaluation.json does not exist")],
)
def test_summary_refuses_bad_input(args, setup, fragment, trained, tmp_path):
    check_refused(["summary", *args], setup, fragment, trained, tmp_path)


@pytest.mark.parametrize(
    "args, setup, fragment",
    [
        *EVALUATION_ROWS,
        (["{run}", "{run}"], None, "two runs are named run"),
        (["{run}", "--reference", "{tmp}/missing"], None, "evaluation.json does not exist"),
        (["{run}", "--out", "{tmp}/file"], write("/file", "x"), "--out {tmp}/file is a file"),
        (["{run}", "--goal-fraction", "0"], None, "--goal-fraction must be a positive"),
        (["{run}", "--budget", "-0.5"], None, "FLOPs budgets are positive fractions"),
        (["{run}", "--tolerance", "1.5"], None, "tolerance is a fraction in [0, 1)"),
    ],
)
def test_compare_refuses_bad_input(args, setup, fragment, trained, tmp_path):
    check_refused(["compare", *args], setup, fragment, trained, tmp_path)


# --- validate / info: configs and names ------------------------------------------------------


@pytest.mark.parametrize(
    "args, setup, fragment",
    [
        (["train.epochs=1.5"], None, "'train.epochs' expects an integer, got 1.5"),
        (["train.epochs=[1"], None, "override 'train.epochs=[1': cannot parse the value"),
        (["train"], None, "must look like key=value"),
        (["output_dir={tmp}/file/sub"], write("/file", "x"), "{tmp}/file is a file"),
        (["-c", "{tmp}/list.yaml"], write("/list.yaml", "- 1\n"), "mapping at the top level"),
        (["-c", "{tmp}/bad.yaml"], write("/bad.yaml", "a: [1\n"), "is not valid YAML at line"),
        (["-c", "{tmp}"], None, "is a directory; expected a YAML file"),
        (["-c", "mnist_eenets"], None, "Did you mean mnist_eenets_resnet20"),
        (["-c", "{tmp}/bin.yaml"], write("/bin.yaml", b"\xff\xfe"), "cannot read config file"),
        (["model.options.num_classes=3"], None, "num_classes is taken from the dataset"),
        (["device=quantum"], None, "unknown device 'quantum'"),
    ],
)
def test_validate_refuses_bad_input(args, setup, fragment, trained, tmp_path):
    check_refused(["validate", *args], setup, fragment, trained, tmp_path)


@pytest.mark.parametrize(
    "args, setup, fragment",
    [
        (["--preset", "branchy"], None, "unknown preset 'branchy'. Did you mean branchy_resnet18"),
        (["--preset", "resnet18"], None, "Available: branchy_resnet18, mobilenet_v2_3exits"),
    ],
)
def test_info_refuses_bad_input(args, setup, fragment, trained, tmp_path):
    check_refused(["info", *args], setup, fragment, trained, tmp_path)


def test_the_installed_command_prints_one_line_too(tmp_path):
    """The same path through ``python -m exitwise.cli`` (the console script's ``main``)."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "exitwise.cli", "run", "train.epochs=1.5"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: 'train.epochs' expects an integer, got 1.5"
    assert not list(tmp_path.iterdir())
