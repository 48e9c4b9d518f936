import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest

from exitwise.config import ConfigError, load_config, resolve_config, shipped_configs
from exitwise.errors import InputError

ROOT = Path(__file__).parents[1]


def test_defaults_are_the_main_job():
    cfg = load_config()
    assert cfg.data.name == "synthetic-signs" and cfg.model.preset == "branchy_resnet18"


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 4\n  lr: 0.1\ndata:\n  name: gtsrb\n")
    overrides = [
        "train.epochs=2",
        "model.options.backbone_options.stem=cifar",
        "eval.policies=[entropy]",
        "data.options.image_size=48",
    ]
    cfg = load_config(f, overrides)
    assert cfg.train.epochs == 2 and cfg.train.lr == 0.1 and cfg.data.name == "gtsrb"
    assert cfg.model.options["backbone_options"] == {"stem": "cifar"}
    assert cfg.eval.policies == ["entropy"] and cfg.data.options == {"image_size": 48}
    assert isinstance(cfg.train.lr, float)


def test_numbers_take_the_type_of_their_field():
    cfg = load_config(None, ["train.epochs=2.0", "train.lr=1", "data.options.image_size=24.0"])
    assert cfg.train.epochs == 2 and type(cfg.train.epochs) is int
    assert cfg.train.lr == 1.0 and type(cfg.train.lr) is float
    assert type(cfg.data.options["image_size"]) is int
    assert load_config(None, ["eval.policies=entropy"]).eval.policies == ["entropy"]
    assert load_config(None, ["data.root=null"]).data.root is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epocs=3", r"unknown config key 'train.epocs'. Did you mean epochs"),
        ("trian.epochs=3", "unknown config key 'trian'"),
        ("train.epochs=many", "'train.epochs' expects an integer, got 'many'"),
        ("train.epochs=1.5", "'train.epochs' expects an integer, got 1.5"),
        ("train.epochs=-1", "train.epochs must be >= 0, got -1"),
        ("train.epochs=true", "expects an integer, got True"),
        ("train.lr=fast", "'train.lr' expects a number, got 'fast'"),
        ("train.two_stage=3", "expects true/false"),
        ("train", "must look like key=value"),
        ("train=3", "is a section"),
        ("train.epochs=[1", "cannot parse the value"),
        ("train.optimizer=lbfgs", "optimizer must be"),
        ("train.loss_weights=unifrom", "Did you mean 'uniform'"),
        ("data.val_fraction=1.5", r"val_fraction must be in \(0, 1\)"),
        ("data.root=5", "'data.root' expects a string or null, got 5"),
        ("data.name=gtsbr", "data.name: unknown dataset 'gtsbr'. Did you mean 'gtsrb'"),
        ("data.options=3", "'data.options' expects a mapping, got 3"),
        ("data.options.foo=1", "dataset 'synthetic-signs' takes no option 'foo'"),
        ("data.options.train_per_class=2.5", "train_per_class' expects an integer, got 2.5"),
        ("model.preset=branchy", "unknown preset 'branchy'. Did you mean branchy_resnet18"),
        ("model.preset=null", "model: no backbone"),
        ("model.options.backbone=resnet19", "unknown backbone 'resnet19'"),
        ("model.options.exit_head=branch", "unknown exit head 'branch'"),
        ("model.options.distribution=lin", "unknown distribution 'lin'"),
        ("model.options.depth=3", "build_multi_exit takes no option 'depth'"),
        ("model.options.num_classes=3", "num_classes is taken from the dataset"),
        ("eval.policies=[max_prob]", "unknown exit policy 'max_prob'"),
        ("eval.tolerance=-0.1", r"eval.tolerance must be in \[0, 1\)"),
        ("threads=0", "threads must be >= 1"),
        ("output_dir=null", "'output_dir' expects a string, got None"),
    ],
)
def test_bad_overrides_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value) and isinstance(info.value, InputError)


def test_output_dir_must_be_a_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for out in (f, f / "sub"):
        with pytest.raises(ConfigError, match=f"{f} is a file; expected a folder"):
            load_config(None, [f"output_dir={out}"])
    assert load_config(None, [f"output_dir={tmp_path / 'new' / 'run'}"])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="neither a file nor a shipped config"):
        load_config(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    f = tmp_path / "list.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(f)
    f.write_text("train:\n  epochs: 2\n lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"list.yaml is not valid YAML at line 3, column 2"):
        load_config(f)
    f.write_text("!!python/object:os.system {}\n")
    with pytest.raises(ConfigError, match="could not determine a constructor"):
        load_config(f)  # safe_load refuses arbitrary objects
    f.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(f)


def test_shipped_configs_resolve_as_package_resources():
    names = shipped_configs()
    shipped = resources.files("exitwise").joinpath("configs")
    assert names and names == sorted(p.name[:-5] for p in shipped.iterdir() if p.is_file())
    assert "gtsrb_branchy_resnet18" in names and "signs_branchy_resnet18" in names
    for name in names:
        label, text = resolve_config(name)
        assert label == f"shipped:{name}" and text == shipped.joinpath(f"{name}.yaml").read_text()
        assert resolve_config(f"{name}.yaml") == (label, text)
        load_config(name)  # every shipped config is valid
    assert load_config("gtsrb_branchy_resnet18").data.name == "gtsrb"


def test_a_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("gtsrb_branchy_resnet18.yaml").write_text("data: {name: mnist}\n")
    assert load_config("gtsrb_branchy_resnet18.yaml").data.name == "mnist"
    assert load_config("gtsrb_branchy_resnet18").data.name == "gtsrb"


def test_an_unknown_config_name_lists_the_shipped_ones_with_near_matches():
    with pytest.raises(ConfigError) as info:
        load_config("gtsrb_branchy")
    msg = str(info.value)
    assert "Did you mean gtsrb_branchy_resnet18" in msg
    assert "Shipped: " + ", ".join(shipped_configs()) in msg
    with pytest.raises(ConfigError, match="Did you mean gtsrb_resnet18_plain"):
        load_config("configs/gtsrb_resnet18_plain.yaml")  # the old repository path


def test_nested_options_merge_deeply(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  options:\n    exit_head: pool\n    backbone_options: {stem: half}\n")
    cfg = load_config(f, ["model.options.backbone_options.stem=cifar"])
    assert cfg.model.options == {"exit_head": "pool", "backbone_options": {"stem": "cifar"}}
    assert load_config().model.options == {}


@pytest.mark.slow
def test_the_wheel_ships_the_configs(tmp_path):
    # built from a copy, so setuptools' build/ and egg-info stay out of the working tree
    source = tmp_path / "source"
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("exitwise-*.whl")
    inside = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"exitwise/configs/{name}.yaml" for name in shipped_configs()}
    assert expected and expected <= inside, sorted(expected - inside)
