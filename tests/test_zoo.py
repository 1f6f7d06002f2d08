"""The model zoo: published parameter counts, and one shared tester run on
every registered model (shapes at two sizes, jit, finite gradients, an Orbax
save/restore round trip, jax.export with a symbolic batch size).

The default run covers every architecture (with ResNet-18) and every light
encoder; `-m slow` runs the tester on every architecture x encoder pair.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from chameleon_jax.losses import build_loss
from chameleon_jax.models import build_model, listing
from chameleon_jax.models.weights import load_weights, save_weights
from chameleon_jax.registry import ENCODERS, MODELS
from chameleon_jax.model_io.state import merge, model_variables
from tests.conftest import REPO, xla_flags

# Published counts (torchvision; timm for ViT) with a 1000-class RGB head.
PUBLISHED = {"resnet18": 11_689_512, "resnet34": 21_797_672,
             "resnet50": 25_557_032, "resnet101": 44_549_160,
             "convnext_tiny": 28_589_128, "convnext_small": 50_223_688,
             "convnext_base": 88_591_464, "vit_tiny": 5_717_416,
             "vit_small": 22_050_664, "vit_base": 86_567_656,
             "efficientnet_b0": 5_288_548}
LIGHT = ("resnet18", "convnext_atto", "efficientnet_b0", "vit_tiny")
SEGMENTATION = [a for a in MODELS.names() if a != "classifier"]


@pytest.mark.parametrize("encoder", sorted(PUBLISHED))
def test_published_parameter_counts(encoder):
  norm = "batch" if encoder.startswith(("resnet", "efficientnet")) else None
  model = nnx.eval_shape(lambda: build_model(
      "classifier", encoder=encoder, num_classes=1000, in_channels=3,
      norm=norm))
  assert listing.count_params(model) == PUBLISHED[encoder]


def test_groupnorm_has_batchnorm_parameter_count():
  counts = [listing.count_params(nnx.eval_shape(lambda n=n: build_model(
      "classifier", encoder="resnet50", num_classes=1000, in_channels=3,
      norm=n))) for n in ("group", "batch")]
  assert counts[0] == counts[1] == PUBLISHED["resnet50"]


def _spec(architecture, encoder):
  return dict(encoder=encoder, num_classes=3, in_channels=1)


def check_model(architecture, encoder, tmp_path):
  """The shared tester; every registered model must pass it."""
  spec = _spec(architecture, encoder)
  model = build_model(architecture, seed=0, **spec)
  classify = architecture == "classifier"
  sizes = ((32, 32), (64, 32)) if classify else ((32, 32), (32, 64))
  graphdef, state = nnx.split(model)

  @jax.jit
  def forward(state, x):
    return nnx.merge(graphdef, state)(x)

  key = jax.random.key(0)
  for i, (h, w) in enumerate(sizes):  # The second size by shape inference.
    x = jax.random.uniform(key, (2, h, w, 1))
    y = forward(state, x) if i == 0 else jax.eval_shape(forward, state, x)
    assert y.shape == ((2, 3) if classify else (2, h, w, 3))
    assert y.dtype == jnp.float32
    assert i or bool(jnp.isfinite(y).all())

  # Finite gradients for every parameter, through the train-mode forward.
  x = jax.random.uniform(key, (2, *sizes[0], 1))
  labels = (jnp.array([0, 2]) if classify else
            jax.random.randint(key, (2, *sizes[0]), 0, 3))
  loss_fn = build_loss("cross_entropy")

  @jax.jit
  def loss_and_grad(params, rest):
    def loss(p):  # As the train step does: merge pure dicts, train mode.
      logits = merge(graphdef, p, rest)(x, train=True)
      if classify:
        return -jnp.mean(jnp.take_along_axis(
            jax.nn.log_softmax(logits), labels[:, None], axis=1))
      return loss_fn(logits, labels)
    return jax.value_and_grad(loss)(params)

  params, rest = model_variables(model)
  value, grads = loss_and_grad(params, rest)
  leaves = jax.tree.leaves(grads)
  assert np.isfinite(float(value))
  assert all(bool(jnp.isfinite(g).all()) for g in leaves)
  nonzero = np.mean([bool(jnp.any(g != 0)) for g in leaves])
  assert nonzero > 0.9, f"only {nonzero:.0%} of parameters get a gradient"

  # Orbax round trip into the model with every float value changed (not a
  # second initialisation: that costs seconds of eager compiles per model).
  reference = forward(state, x)
  save_weights(model, tmp_path / "w", {"name": architecture, **spec})
  other = nnx.merge(graphdef, jax.tree.map(
      lambda v: v + 1 if jnp.issubdtype(v.dtype, jnp.floating) else v, state))
  assert not np.allclose(forward(nnx.split(other)[1], x), reference)
  load_weights(other, tmp_path / "w")
  np.testing.assert_array_equal(forward(nnx.split(other)[1], x), reference)

  # jax.export with a symbolic batch dimension, serialised and called at a
  # batch size (1) other than the one used above.
  b, = jax.export.symbolic_shape("b")
  exported = jax.export.export(jax.jit(lambda x: forward(state, x)))(
      jax.ShapeDtypeStruct((b, *sizes[0], 1), jnp.float32))
  assert str(exported.in_avals[0].shape[0]) == "b"
  restored = jax.export.deserialize(exported.serialize())
  np.testing.assert_allclose(restored.call(x[:1]), reference[:1], rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize("architecture", SEGMENTATION)
def test_every_architecture(architecture, tmp_path):
  check_model(architecture, "resnet18", tmp_path)


@pytest.mark.parametrize("encoder", ENCODERS.names())
def test_encoder_feature_contract(encoder):
  """Every encoder returns the maps it declares, at two input sizes
  (abstractly: jax.eval_shape, no weights or compute)."""
  enc = nnx.eval_shape(lambda: ENCODERS.build(encoder, in_channels=2,
                                              rngs=nnx.Rngs(0)))
  channels, strides = enc.feature_channels, enc.feature_strides
  graphdef, state = nnx.split(enc)
  assert len(channels) == len(strides) >= 4
  assert list(strides) == sorted(strides) and strides[-1] == 32
  for h, w in ((64, 64), (96, 128)):
    out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state,
                         jax.ShapeDtypeStruct((1, h, w, 2), jnp.float32))
    assert [f.shape for f in out] == [(1, h // s, w // s, c)
                                      for c, s in zip(channels, strides)]


@pytest.mark.parametrize("encoder", ["efficientnet_b0", "vit_tiny"])
def test_light_encoders(encoder, tmp_path):
  """EfficientNet-B0 and ViT through the shared tester in the default run
  (ResNet-18 above, ConvNeXt in the classifier)."""
  check_model("fpn", encoder, tmp_path)


@pytest.mark.parametrize("encoder", ["resnet18", "convnext_atto"])
@pytest.mark.parametrize("architecture", MODELS.names())
def test_every_architecture_builds_the_registered_encoder(architecture,
                                                           encoder):
  """The constructor is uniform: the encoder inside any architecture is the
  one ENCODERS.build(encoder) gives (norm, groups, stochastic depth; the
  graph without its parameters, abstractly), and zoo-wide options reach it
  the same way in every architecture."""
  def inside(**options):
    model = nnx.eval_shape(lambda: build_model(
        architecture, num_classes=2, in_channels=1, encoder=encoder,
        **options))
    return nnx.graphdef(model.encoder)

  def alone(**options):
    return nnx.graphdef(nnx.eval_shape(lambda: ENCODERS.build(
        encoder, in_channels=1, rngs=nnx.Rngs(0), dtype=jnp.float32,
        head=architecture == "classifier", **options)))

  assert inside() == alone()
  options = ({"norm_groups": 16} if encoder == "resnet18"
             else {"drop_path_rate": 0.3})
  assert inside(**options) == alone(**options) != alone()


def test_classifier(tmp_path):
  check_model("classifier", "convnext_atto", tmp_path)


def test_plain_unet(tmp_path):
  check_model("unet", None, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", MODELS.names())
@pytest.mark.parametrize("encoder", ENCODERS.names())
def test_every_pair(architecture, encoder, tmp_path):
  check_model(architecture, encoder, tmp_path)


@pytest.mark.e2e
def test_bfloat16_compute_keeps_float32_parameters():
  x = jax.random.uniform(jax.random.key(3), (2, 64, 64, 1))
  full = build_model("fpn", encoder="resnet18", num_classes=2, in_channels=1)
  half = build_model("fpn", encoder="resnet18", num_classes=2, in_channels=1,
                     dtype="bfloat16")
  assert {p.dtype for p in jax.tree.leaves(nnx.state(half, nnx.Param))} == {
      jnp.dtype(jnp.float32)}
  y_full, y_half = full(x), half(x)
  assert y_half.dtype == jnp.float32
  # Same initial weights (same seed); bf16 has an 8-bit mantissa.
  scale = float(jnp.abs(y_full).max())
  assert float(jnp.abs(y_half - y_full).max()) < 0.05 * scale


def test_stochastic_depth_drops_whole_samples():
  from chameleon_jax.models.layers import drop_path
  layer = drop_path(0.25, nnx.Rngs(0))
  y = layer(jnp.ones((4000, 2, 2, 3)), deterministic=False)
  per_sample = y.reshape(4000, -1)
  assert bool(jnp.all((per_sample == 0) | (per_sample == 1 / 0.75)))
  assert bool(jnp.all(per_sample.min(1) == per_sample.max(1)))
  assert abs(float(jnp.mean(per_sample[:, 0] == 0)) - 0.25) < 0.03
  # (ResNet: ConvNeXt's 1e-6 layer scale makes fresh blocks near-identities.)
  model = build_model("classifier", encoder="resnet18", num_classes=2,
                      in_channels=1, drop_path_rate=0.5)
  x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 1))
  assert not np.allclose(model(x, train=True), model(x, train=True))
  np.testing.assert_array_equal(model(x), model(x))


def test_vit_position_embeddings_resample():
  model = build_model("classifier", encoder="vit_tiny", num_classes=2,
                      in_channels=1)
  vit = model.encoder
  np.testing.assert_array_equal(vit.position_embedding(14, 14),
                                vit.pos_embed.get_value())
  vit.pos_embed.set_value(jnp.full_like(vit.pos_embed.get_value(), 0.3))
  resampled = vit.position_embedding(6, 10)
  assert resampled.shape == (1, 61, vit.pooled_features)
  np.testing.assert_allclose(resampled, 0.3, atol=1e-6)


@pytest.mark.e2e
def test_deep_supervision_through_the_train_step():
  import optax
  from chameleon_jax.model_io import state as state_lib
  from chameleon_jax.train import steps
  model = build_model("unet", encoder="resnet18", num_classes=2,
                      in_channels=1, deep_supervision=True,
                      decoder_channels=(32, 32, 16, 16, 8))
  x = jax.random.uniform(jax.random.key(0), (2, 64, 64, 1))
  outputs = model(x, train=True)
  assert [o.shape[1] for o in outputs] == [64, 32, 16, 8]
  assert model(x).shape == (2, 64, 64, 2)  # Inference: logits alone.
  graphdef, state = state_lib.create(model, optax.adam(1e-3), use_ema=False)
  step = jax.jit(steps.make_train_step(graphdef, build_loss("dice_ce"),
                                       optax.adam(1e-3), None))
  mask = (x[..., 0] > 0.7).astype(jnp.int32)
  losses = []
  for _ in range(5):
    state, metrics = step(state, {"image": x, "mask": mask})
    losses.append(float(metrics["loss"]))
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]


_BATCHNORM_SYNC = r"""
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from chameleon_jax.models import build_model
from chameleon_jax import sharding
from chameleon_jax.model_io.state import merge, model_variables
from tests.conftest import REPO
from flax import nnx
assert jax.device_count() == 4
model = build_model("fpn", encoder="resnet18", num_classes=2, in_channels=1,
                    norm="batch")
graphdef = nnx.graphdef(model)
params, rest = model_variables(model)
def step(p, r, x):
  m = merge(graphdef, p, r)
  y = m(x, train=True)
  return y, model_variables(m)[1]
x = jax.random.uniform(jax.random.key(0), (8, 64, 64, 1))
# Images differ in brightness per device shard: per-device statistics would
# differ from the global ones.
x = x + jnp.repeat(jnp.arange(4.0), 2)[:, None, None, None]
y1, r1 = jax.jit(step)(params, rest, x)
mesh = sharding.make_mesh()
xs = jax.device_put(x, NamedSharding(mesh, P("data")))
y4, r4 = jax.jit(step)(params, rest, xs)
assert len(xs.sharding.device_set) == 4
np.testing.assert_allclose(y4, y1, rtol=1e-4, atol=1e-4)
for a, b in zip(jax.tree.leaves(r1), jax.tree.leaves(r4)):
  if a.dtype == jnp.float32:
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
print("synchronised")
"""


def test_batchnorm_statistics_are_global_under_data_parallel_jit():
  result = subprocess.run(
      [sys.executable, "-c", _BATCHNORM_SYNC], cwd=REPO, capture_output=True,
      text=True, timeout=600,
      env={**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": xla_flags(4)})
  assert "synchronised" in result.stdout, result.stderr[-3000:]


def test_zoo_listing_through_main():
  from tests.conftest import run_main
  out = run_main("--mode=zoo", "--zoo_filter=classifier/resnet50",
                 "--zoo_size=224").stdout
  assert "| classifier | resnet50 | 25,557,032 |" in out
  gflops = float(out.strip().splitlines()[-1].split("|")[4])
  assert 7.5 < gflops < 8.5  # ~4.1 GMACs, the published figure.
  refused = run_main("--mode=zoo,train", check=False)
  assert refused.returncode != 0
