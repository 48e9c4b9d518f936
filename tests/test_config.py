import pytest

from exitwise.config import ConfigError, load_config


def test_defaults_are_the_main_job():
    cfg = load_config()
    assert cfg.data.name == "synthetic-signs" and cfg.model.preset == "branchy_resnet18"


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 4\n  lr: 0.1\ndata:\n  name: gtsrb\n")
    cfg = load_config(f, ["train.epochs=2", "model.options.backbone_options.stem=cifar",
                          "eval.policies=[entropy]", "data.options.train_per_class=5"])
    assert cfg.train.epochs == 2 and cfg.train.lr == 0.1 and cfg.data.name == "gtsrb"
    assert cfg.model.options["backbone_options"] == {"stem": "cifar"}
    assert cfg.eval.policies == ["entropy"] and cfg.data.options == {"train_per_class": 5}
    assert isinstance(cfg.train.lr, float)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epocs=3", r"unknown config key 'train.epocs'. Did you mean epochs"),
        ("trian.epochs=3", "unknown config key 'trian'"),
        ("train.epochs=many", "expects a number"),
        ("train.two_stage=3", "expects true/false"),
        ("train", "must look like key=value"),
        ("train=3", "is a section"),
        ("train.optimizer=lbfgs", "optimizer must be"),
        ("data.val_fraction=1.5", r"val_fraction must be in \(0, 1\)"),
    ],
)
def test_bad_overrides_are_rejected(override, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        load_config(None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    f = tmp_path / "list.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(f)
    f.write_text("!!python/object:os.system {}\n")
    with pytest.raises(Exception, match="could not determine a constructor"):
        load_config(f)  # safe_load refuses arbitrary objects


def test_shipped_configs_are_valid():
    from pathlib import Path

    configs = sorted(Path(__file__).parents[1].joinpath("configs").glob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)


def test_nested_options_merge_deeply(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  options:\n    exit_head: pool\n    backbone_options: {stem: half}\n")
    cfg = load_config(f, ["model.options.backbone_options.stem=cifar"])
    assert cfg.model.options == {"exit_head": "pool", "backbone_options": {"stem": "cifar"}}
    assert load_config().model.options == {}
