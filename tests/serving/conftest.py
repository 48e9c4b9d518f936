"""A small saved run (synthetic signs, an untrained ResNet-20 with two side exits) for the
serving verbs' tests: `exitwise edge`, `exitwise offload`."""

import json

import pytest

from exitwise.config import load_config
from exitwise.experiments.pipeline import build_model, load_data
from exitwise.training.checkpoint import save_model

SMALL = [
    "data.options.train_per_class=2",
    "data.options.test_per_class=1",
    "data.val_fraction=0.5",
    "model.preset=null",
    "model.options.backbone=resnet20",
    "model.options.exits_after=[layer1.1,layer2.1]",
    "threads=2",
]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("small_run")
    cfg = load_config(None, [*SMALL, f"output_dir={d}"])
    save_model(d, build_model(cfg, load_data(cfg)))
    (d / "run_config.json").write_text(json.dumps(cfg.to_dict()))
    return d
