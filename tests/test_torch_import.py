"""Weight import proven numerically: the same architecture built in PyTorch
(torchvision / timm, random weights, nothing downloaded), saved to a file,
imported, and the logits compared. Skipped when torch is not installed."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import jax.numpy as jnp  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from chameleon_jax.models import build_model  # noqa: E402
from chameleon_jax.models.torch_import import (  # noqa: E402
    adapt_input_channels, import_torch_weights)


def _calibrate_batchnorm(net, seed, size=64):
  """Running statistics measured on data (as a trained network has), with
  random affine parameters, so eval-mode BatchNorm is exercised and the
  logits have the scale of a real network's (O(1-10))."""
  g = torch.Generator().manual_seed(seed)
  for m in net.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.momentum = None  # Cumulative average over the calibration batches.
      m.weight.data.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.5)
      m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
  net.train()
  with torch.no_grad():
    for _ in range(2):
      net(torch.randn(8, 3, size, size, generator=g))
  return net.eval()


def _compare(net, encoder, size, tmp_path, fmt, norm, atol=1e-4):
  torch.manual_seed(0)
  path = tmp_path / f"weights.{fmt}"
  state = {k: v.contiguous() for k, v in net.state_dict().items()}
  if fmt == "safetensors":
    save_file(state, str(path))
  else:
    torch.save(state, path)
  model = build_model("classifier", encoder=encoder, num_classes=1000,
                      in_channels=3, norm=norm, input_mean=(0.0,),
                      input_std=(1.0,))
  report = import_torch_weights(model, path)
  assert not [k for k in report["skipped"]
              if not k.endswith("num_batches_tracked")]
  x = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(
      np.float32)
  with torch.no_grad():
    expected = net(torch.from_numpy(x)).numpy()
  got = np.asarray(model(jnp.asarray(x.transpose(0, 2, 3, 1))))
  np.testing.assert_allclose(got, expected, atol=atol, rtol=0)
  return model, path


def test_resnet50_matches_torchvision(tmp_path):
  net = _calibrate_batchnorm(torchvision.models.resnet50(), 1)
  _compare(net, "resnet50", 96, tmp_path, "pth", "batch")


def test_vit_small_matches_timm(tmp_path):
  timm = pytest.importorskip("timm")
  net = timm.create_model("vit_small_patch16_224", pretrained=False).eval()
  _compare(net, "vit_small", 224, tmp_path, "safetensors", None)


# ConvNeXt and EfficientNet parity (50 s together on 2 cores) run with
# `-m slow`; ResNet-50 and ViT-S, the required pair, run always.
@pytest.mark.slow
def test_convnext_tiny_matches_torchvision(tmp_path):
  net = torchvision.models.convnext_tiny().eval()
  with torch.no_grad():  # torchvision inits layer scale to 1e-6: make the
    for m in net.modules():  # blocks matter for the comparison.
      if hasattr(m, "layer_scale"):
        m.layer_scale.uniform_(0.5, 1.0)
  _compare(net, "convnext_tiny", 64, tmp_path, "safetensors", None)


@pytest.mark.slow
def test_efficientnet_b0_matches_torchvision(tmp_path):
  net = _calibrate_batchnorm(torchvision.models.efficientnet_b0(), 2)
  _compare(net, "efficientnet_b0", 64, tmp_path, "safetensors", "batch")


def test_encoder_import_into_a_grey_segmentation_model(tmp_path):
  """A classifier checkpoint fills a 1-channel FPN's encoder; the RGB stem is
  summed over channels, so a grey image x gives what RGB (x, x, x) gives."""
  net = _calibrate_batchnorm(torchvision.models.resnet18(), 3)
  path = tmp_path / "r18.safetensors"
  save_file({k: v.contiguous() for k, v in net.state_dict().items()},
            str(path))
  model = build_model("fpn", encoder="resnet18", num_classes=2,
                      in_channels=1, norm="batch", input_mean=(0.0,),
                      input_std=(1.0,))
  report = import_torch_weights(model, path)
  assert set(report["skipped"]) >= {"fc.weight", "fc.bias"}
  grey = np.random.default_rng(1).normal(size=(1, 1, 64, 64)).astype(
      np.float32)
  net.fc = torch.nn.Identity()
  with torch.no_grad():
    features = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(
        net.relu(net.bn1(net.conv1(torch.from_numpy(grey.repeat(3, 1))))))))))
  ours = model.encoder(jnp.asarray(grey.transpose(0, 2, 3, 1)))[-1]
  np.testing.assert_allclose(np.asarray(ours),
                             features.numpy().transpose(0, 2, 3, 1),
                             atol=1e-4)


def test_mismatch_lists_missing_and_unexpected(tmp_path):
  net = torchvision.models.resnet18()
  path = tmp_path / "r18.safetensors"
  state = {k: v.contiguous() for k, v in net.state_dict().items()}
  state["extra.weight"] = torch.zeros(3)
  del state["layer1.0.conv1.weight"]
  save_file(state, str(path))
  model = build_model("classifier", encoder="resnet18", num_classes=10,
                      in_channels=3, norm="batch")
  with pytest.raises(ValueError, match=r"stages/0/0/convs/0/kernel.*extra"):
    import_torch_weights(model, path)
  group = build_model("classifier", encoder="resnet34", num_classes=10,
                      in_channels=3)
  with pytest.raises(ValueError, match="norm='batch'"):
    import_torch_weights(group, path)


def test_channel_adaptation_rule():
  kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 4))
  np.testing.assert_allclose(adapt_input_channels(kernel, 1),
                             kernel.sum(2, keepdims=True))
  five = adapt_input_channels(kernel, 5)
  np.testing.assert_allclose(five[:, :, 3], kernel[:, :, 0] * 3 / 5)
  # With a multiple of 3 channels a constant image responds as in RGB.
  np.testing.assert_allclose(adapt_input_channels(kernel, 6).sum(2),
                             kernel.sum(2))
