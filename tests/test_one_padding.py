"""One padding convention for every inference path (issue 37, item 6).

A whole image is edge-padded at the bottom and right to the smallest canvas
that holds it (`export.buckets`, by default `data.image_size`): evaluation
(EvalTransform, the "pad" policy), `--mode=predict`, sliding windows on an
image no larger than the window, and the served SavedModel must give the
same probabilities for images of odd sizes. With GroupNorm every pixel
depends on the padding, so a path that pads differently or to another
canvas answers differently (the negative controls below).
"""

import json

import numpy as np
import optax
import pytest
from PIL import Image

from chameleon_jax import configfile
from chameleon_jax.components import build, modes
from chameleon_jax.data import images as imio
from chameleon_jax.data.transforms import EvalTransform
from chameleon_jax.evaluation import inference
from chameleon_jax.evaluation.settings import PredictSettings
from chameleon_jax.evaluation.sliding_window import sliding_window
from chameleon_jax.model_io import state as state_lib
from chameleon_jax.model_io.restore import Restored
from chameleon_jax.models import build_model
from chameleon_jax.train import steps

CANVAS = (32, 32)
SIZES = ((27, 29), (17, 31), (32, 32), (9, 20), (31, 8))


@pytest.fixture(scope="module")
def model():
  net = build_model("unet", num_classes=3, in_channels=1, widths=(8, 16),
                    norm="group")
  graphdef, state = state_lib.create(net, optax.sgd(0.1), use_ema=False)
  return graphdef, state, net.stride


def _images():
  rng = np.random.default_rng(0)
  out = []
  for h, w in SIZES:  # Smooth ramps plus noise: edges differ from the inside.
    ramp = np.linspace(0, 200, h * w).reshape(h, w)
    out.append(np.clip(ramp + rng.normal(0, 25, (h, w)), 0, 255)
               .astype(np.uint8)[..., None])
  return out


def _eval_path(predict, state, image):
  h, w = image.shape[:2]
  example = EvalTransform(CANVAS, "pad").map(
      {"image": image, "mask": np.zeros((h, w), np.uint8), "label": 0})
  assert (example["mask"][h:] == 255).all() and (example["mask"][:, w:]
                                                 == 255).all()
  return np.asarray(predict(state, example["image"][None]))[0, :h, :w]


def test_eval_predict_sliding_window_and_served_agree(model, tmp_path):
  graphdef, state, stride = model
  predict = steps.make_predict_fn(graphdef)
  images = _images()
  folder = tmp_path / "in"
  folder.mkdir()
  for i, image in enumerate(images):
    imio.save_png(folder / f"im{i}.png", image[..., 0])
  # --mode=predict, whole images, the served buckets as canvases.
  settings = PredictSettings(input_dir=str(folder),
                             output_dir=str(tmp_path / "out"), window=(),
                             overlap=0.5, scale=1.0, batch_size=2,
                             canvases=(CANVAS, (64, 96)))
  out = inference.predict_folder(
      tmp_path, Restored(graphdef, state, None, {"signature": {
          "in_channels": 1}}), settings, flip_tta=False, calibrated=False)
  predicted = {row["file"].rsplit("/", 1)[-1]: row
               for row in json.loads((out / "predictions.json").read_text())}
  served = _served(tmp_path, graphdef, state, stride)
  for i, image in enumerate(images):
    h, w = image.shape[:2]
    want = _eval_path(predict, state, image)
    window = np.asarray(sliding_window(predict, image.astype(np.float32)
                                       / 255, CANVAS, args=(state,)))
    np.testing.assert_allclose(window, want, atol=2e-6, err_msg=str((h, w)))
    got = served(images=served_input(image))["probabilities"].numpy()[0]
    np.testing.assert_allclose(got, want, atol=2e-5, err_msg=str((h, w)))
    row = predicted[f"im{i}.png"]
    assert row["max_defect_probability"] == pytest.approx(
        float(want[..., 1:].max()), abs=2e-6)
    mask = np.asarray(Image.open(out / f"im{i}_mask.png"))  # Indices.
    np.testing.assert_array_equal(mask, want.argmax(-1))
    # Negative controls: zero padding, or a larger canvas, answer otherwise.
    x = image.astype(np.float32)[None] / 255
    zeros = np.pad(x, ((0, 0), (0, CANVAS[0] - h), (0, CANVAS[1] - w),
                       (0, 0)))
    larger = np.pad(x, ((0, 0), (0, 64 - h), (0, 96 - w), (0, 0)),
                    mode="edge")
    if (h, w) != CANVAS:
      assert np.abs(np.asarray(predict(state, zeros))[0, :h, :w]
                    - want).max() > 1e-2
    assert np.abs(np.asarray(predict(state, larger))[0, :h, :w]
                  - want).max() > 1e-2


def served_input(image):
  tf = pytest.importorskip("tensorflow")
  return tf.constant(image[None])


def _served(tmp_path, graphdef, state, stride):
  tf = pytest.importorskip("tensorflow")
  from export import savedmodel
  contract = savedmodel.Contract(
      task="segmentation", class_names=("ok", "scratch", "dent"), channels=1,
      input_dtype="uint8", buckets=(CANVAS, (64, 96)), stride=stride,
      scale=1.0, image_size=None, top_k=2, platforms=("cpu",))
  module = savedmodel.ServingModule(graphdef, state.params, state.model_state,
                                    contract)
  directory = str(tmp_path / "saved_model")
  savedmodel.save(module, directory)
  return tf.saved_model.load(directory).signatures["serving_default"]


def _config(**data):
  config = configfile.load("tests/tiny_config.py")
  for key, value in data.items():
    config[key.split(".")[0]][key.split(".")[1]] = value
  return config


def test_the_canvases_are_the_evaluation_canvas_by_default():
  assert build.canvases(_config()) == (CANVAS,)
  assert build.size_policy(_config()) == "pad"
  assert build.size_policy(configfile.load("tests/tiny_config.py",
                                           "classification")) == "resize"
  assert build.canvases(_config(**{"export.buckets": ((32, 64), (64, 64))})
                        ) == ((32, 64), (64, 64))
  with pytest.raises(ValueError, match=r"do not hold data.image_size"):
    build.canvases(_config(**{"export.buckets": ((16, 16), (64, 64))}))


@pytest.mark.parametrize("policy", ["resize", "crop"])
def test_export_refuses_a_segmentation_evaluated_otherwise(tmp_path, policy):
  with pytest.raises(ValueError, match=f"size_policy='{policy}'.*pads"):
    modes.export(_config(**{"data.size_policy": policy}), str(tmp_path))
