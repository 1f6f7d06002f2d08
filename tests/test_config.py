"""Configs: templates load, gin defaults parse and act, variants are checked."""

import importlib.util
from pathlib import Path

import pytest

from chameleon_jax import components
from chameleon_jax.registry import MODELS

REPO = Path(__file__).resolve().parents[1]


def _load(path: str):
  spec = importlib.util.spec_from_file_location("cfg", REPO / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("path", ["experiments/quickstart.py",
                                  "experiments/magnetic_tile.py",
                                  "tests/tiny_config.py"])
def test_experiment_configs_build_their_components(path):
  config = _load(path).get_config()
  components.parse_gin(config)
  assert config.model.name in MODELS
  components.loss(config)
  components.augment(config)
  model = components.model(config, num_classes=2, in_channels=1)
  assert model.num_classes == 2


def test_gin_defaults_file_parses_and_config_values_win():
  """Every binding of configs/defaults.gin must reach a real argument."""
  config = _load("tests/tiny_config.py").get_config()
  config.gin_files = [str(REPO / "configs" / "defaults.gin")]
  config.gin_bindings = ["models.unet.norm_groups = 2"]
  components.parse_gin(config)
  try:
    model = components.model(config, num_classes=2, in_channels=1)
    assert model.down[0].norm1.layer.num_groups == 2  # Bound by gin.
    # widths come from the config ((8, 16)), not from the gin file.
    assert model.down[1].conv1.out_features == 16
    components.loss(config)  # The loss bindings name accepted options.
  finally:
    import gin
    gin.clear_config()


def test_gin_binds_encoder_defaults_of_any_architecture():
  config = _load("tests/tiny_config.py").get_config()
  config.model.name = "fpn"
  config.model.kwargs = {"encoder": "resnet18"}
  config.gin_files = [str(REPO / "configs" / "defaults.gin")]
  config.gin_bindings = ["encoders.resnet18.norm_groups = 16"]
  components.parse_gin(config)
  try:
    model = components.model(config, num_classes=2, in_channels=1)
    assert model.encoder.bn1.layer.num_groups == 16
    config.model.kwargs = {"encoder": "resnet18", "norm_groups": 4}
    model = components.model(config, num_classes=2, in_channels=1)
    assert model.encoder.bn1.layer.num_groups == 4  # The config wins.
  finally:
    import gin
    gin.clear_config()


def test_magnetic_tile_variants():
  module = _load("experiments/magnetic_tile.py")
  default = module.get_config()
  assert default.data.source_kwargs.binary is False  # Five classes.
  assert default.train.best_metric == "calibrated/score"
  assert default.eval.decision == "calibrated"  # What calibrated/* needs.
  assert module.get_config("binary").data.source_kwargs.binary is True
  # Flips without 90-degree turns, as measured (the docstring), reach the
  # training transform.
  augment = components.augment(default)
  assert (augment.flip, augment.rotate90) == (True, False)
  assert augment.crop_size == (160, 160)
  with pytest.raises(ValueError, match="variant"):
    module.get_config("triclass")


def test_presets_build_a_config_the_components_accept():
  from configs import presets, segmentation
  config = presets.apply(segmentation.get_config(), "rare_defects",
                         "defect_alarm", "cpu_unet")
  assert config.data.defect_image_fraction == 0.5
  assert dict(config.loss.kwargs) == {"reduce_over": "image",
                                      "empty_target": "exclude"}
  assert (config.eval.decision, config.train.best_metric) == (
      "calibrated", "calibrated/score")  # The pair the training loop needs.
  assert config.eval.per_class_rule is True
  assert config.model.kwargs.widths == (8, 16, 32, 64, 128, 256)
  assert config.train.learning_rate == 5e-3
  assert config.model.kwargs.norm == "batch"
  components.parse_gin(config)
  components.loss(config)
  components.augment(config)
  model = components.model(config, num_classes=6, in_channels=1)
  assert len(model.down) == 6  # cpu_unet's six levels reach the model.
  assert model.down[0].norm1.kind == "batch"  # And its BatchNorm.


def test_unknown_preset_is_refused_with_the_known_names():
  from configs import presets, segmentation
  with pytest.raises(KeyError, match="Did you mean 'defect_alarm'.*cpu_unet"):
    presets.apply(segmentation.get_config(), "defect_alarms")


def test_magnetic_tile_is_built_from_the_presets():
  from configs import presets, segmentation
  config = _load("experiments/magnetic_tile.py").get_config()
  plain = presets.apply(segmentation.get_config(), "rare_defects",
                        "defect_alarm", "cpu_unet")
  for key in ("data.defect_image_fraction", "loss.kwargs", "eval.decision",
              "eval.flip_tta", "train.best_metric", "model.kwargs.widths",
              "model.kwargs.norm", "train.learning_rate"):
    head, _, tail = key.rpartition(".")
    got, want = config, plain
    for part in head.split("."):
      got, want = got[part], want[part]
    assert got[tail] == want[tail], key
