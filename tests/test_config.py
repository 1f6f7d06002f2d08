"""Configs: templates load, gin bindings act, variants are checked."""

import importlib.util
from pathlib import Path

import gin
import pytest
from flax import nnx

from chameleon_jax import components
from chameleon_jax.models import build_model
from chameleon_jax.registry import ENCODERS, MODELS

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


def _graph(build):
  """The parameter-free graph of a module, built abstractly (no weights)."""
  return nnx.graphdef(nnx.eval_shape(build))


def _built(kind: str, name: str):
  """What a registry entry builds with defaults (and the bindings parsed)."""
  if kind == "encoders":
    return _graph(lambda: ENCODERS.build(name, in_channels=1,
                                         rngs=nnx.Rngs(0)))
  if kind == "models":
    return _graph(lambda: build_model(name, num_classes=2, in_channels=1))
  raise AssertionError(f"no comparison for {kind} bindings yet: add one.")


@pytest.mark.parametrize("path", ["experiments/quickstart.py",
                                  "experiments/magnetic_tile.py",
                                  "experiments/synthetic_sweep.py",
                                  "tests/tiny_config.py"])
def test_every_source_option_can_be_set_on_the_command_line(path):
  """Issue 39, trap 5: an experiment that replaced data.source_kwargs
  wholesale lost the template's unset options, and
  --config.data.source_kwargs.channels=3 died with a bare
  AttributeError: "'channels'"."""
  from chameleon_jax.data import catalog
  kwargs = _load(path).get_config().data.source_kwargs
  assert set(catalog.options()) <= set(kwargs.keys())
  # What a command-line override does (config_flags sets the dotted key).
  kwargs.channels, kwargs.empty_fraction, kwargs.images_dir = 3, 0.0, "imgs"
  assert kwargs.channels == 3 and kwargs.images_dir == "imgs"


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.gin")),
                         ids=lambda p: p.name)
def test_every_shipped_gin_binding_changes_what_gets_built(path):
  """A binding that restates a default, or names an argument that no
  longer exists, cannot take effect: each one must change the build."""
  bindings = [line.strip() for line in path.read_text().splitlines()
              if line.strip() and not line.lstrip().startswith("#")]
  assert bindings, f"{path} binds nothing"
  for binding in bindings:
    kind, name, _ = binding.split("=")[0].strip().split(".")
    gin.clear_config()
    try:
      default = _built(kind, name)
      gin.parse_config(binding)
      assert _built(kind, name) != default, f"{path.name}: {binding!r}"
    finally:
      gin.clear_config()


def test_gin_rebinds_template_defaults_and_the_config_wins():
  """The template leaves model options unset, so a gin binding reaches
  them; a value set in the config still wins."""
  config = _load("experiments/quickstart.py").get_config()
  config.gin_bindings = ["models.unet.widths = (8, 16, 32)",
                         "encoders.resnet18.norm_groups = 16"]
  components.parse_gin(config)
  try:
    model = nnx.eval_shape(lambda: components.model(config, 2, 1))
    assert len(model.down) == 3  # Bound by gin.
    config.model.kwargs.widths = (8, 16)
    model = nnx.eval_shape(lambda: components.model(config, 2, 1))
    assert len(model.down) == 2  # The config wins.
    assert components.model_signature(config, 2, 1)["kwargs"] == {
        "widths": [8, 16]}  # Unset options are not recorded as None.
    config.model.name = "fpn"
    config.model.kwargs = {"encoder": "resnet18"}
    model = nnx.eval_shape(lambda: components.model(config, 2, 1))
    assert model.encoder.bn1.layer.num_groups == 16
    config.model.kwargs = {"encoder": "resnet18", "norm_groups": 4}
    model = nnx.eval_shape(lambda: components.model(config, 2, 1))
    assert model.encoder.bn1.layer.num_groups == 4  # The config wins.
  finally:
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


@pytest.mark.parametrize("key,value,match", [
    ("warmup_steps", -5, "train.warmup_steps = -5: expected a number >= 0"),
    ("steps", 0, "train.steps = 0"),
    ("learning_rate", -1e-3, "train.learning_rate = -0.001"),
    ("ema_decay", 1.5, "train.ema_decay = 1.5: expected .* <= 1"),
    ("weight_decay", float("nan"), "train.weight_decay = nan"),
    ("warmup_steps", 600, "warmup_steps = 600 must be smaller than "
     "train.steps = 500"),
])
def test_training_values_out_of_range_are_refused(key, value, match):
  config = _load("experiments/quickstart.py").get_config()
  config.train[key] = value
  with pytest.raises(ValueError, match=match):
    components.train_settings(config)


def test_sweep_variants_are_checked():
  module = _load("experiments/synthetic_sweep.py")
  assert module.get_sweep("halving").rungs
  for call in (module.get_config, module.get_sweep):
    with pytest.raises(ValueError, match="variant 'halvng'"):
      call("halvng")
