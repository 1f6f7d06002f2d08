"""Pretrained weights from local torchvision / timm state dicts.

  model = build_model("classifier", encoder="resnet50", num_classes=6,
                      in_channels=1, norm="batch")
  import_torch_weights(model, "resnet50.safetensors")  # or a .pth

Nothing is downloaded: the file is one the user has. Names are mapped
explicitly, family by family (torchvision ResNet, ConvNeXt, EfficientNet-B0;
timm ViT), with layouts converted (conv OIHW -> HWIO, linear (out, in) ->
(in, out)). The result is strict: every encoder variable must be filled and
every tensor of the file used, except the classification head when its shape
does not fit (a new head for a new task keeps its initialisation) and the
`num_batches_tracked` counters. Anything else raises an error that lists the
missing and unexpected names.

Input channels are adapted as SMP does: RGB first-layer weights are summed
for 1 channel; for N channels they are repeated cyclically and scaled by 3/N.
BatchNorm checkpoints need norm="batch" (GroupNorm has no running statistics).

.safetensors files are read with `safetensors.numpy` (no torch needed); .pth
files need torch (`torch.load(weights_only=True)`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

import jax
import numpy as np
from flax import nnx

from chameleon_jax.models.encoders import convnext, efficientnet, resnet, vit
from chameleon_jax.models.weights import flat_paths

Transform = Callable[[np.ndarray], np.ndarray]


def _conv(w):  # (O, I, kh, kw) -> (kh, kw, I, O)
  return np.transpose(w, (2, 3, 1, 0))


def _linear(w):  # (out, in) -> (in, out)
  return np.transpose(w)


def _same(w):
  return w


def _squeeze_linear(w):  # 1x1 conv (O, I, 1, 1) used as a linear layer.
  return np.transpose(w[:, :, 0, 0])


def _flat_vector(w):  # ConvNeXt layer scale (C, 1, 1) -> (C,)
  return w.reshape(-1)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """float32 numpy arrays from a .safetensors or .pth state dict."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"No weights file {path}.")
  if path.suffix == ".safetensors":
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    tensors = load_file(str(path))
  elif path.suffix in (".pth", ".pt", ".bin"):
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError(f"Reading {path} needs torch; install it or convert "
                        "the file to .safetensors.") from e
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # Training checkpoints nest it.
      if isinstance(loaded, dict) and key in loaded and isinstance(
          loaded[key], dict):
        loaded = loaded[key]
    tensors = {k: v.detach().float().numpy() for k, v in loaded.items()
               if hasattr(v, "detach")}
  else:
    raise ValueError(f"{path}: expected a .safetensors or .pth file.")
  return {k.removeprefix("module."): np.asarray(v, np.float32)
          for k, v in tensors.items()}


def _bn(torch_prefix: str, path: str) -> dict[str, tuple[str, Transform]]:
  return {f"{torch_prefix}.weight": (f"{path}/scale", _same),
          f"{torch_prefix}.bias": (f"{path}/bias", _same),
          f"{torch_prefix}.running_mean": (f"{path}/mean", _same),
          f"{torch_prefix}.running_var": (f"{path}/var", _same)}


def _ln(torch_prefix: str, path: str) -> dict[str, tuple[str, Transform]]:
  return {f"{torch_prefix}.weight": (f"{path}/scale", _same),
          f"{torch_prefix}.bias": (f"{path}/bias", _same)}


def _dense(torch_prefix, path, transform=_linear):
  return {f"{torch_prefix}.weight": (f"{path}/kernel", transform),
          f"{torch_prefix}.bias": (f"{path}/bias", _same)}


def resnet_names(encoder: resnet.ResNet) -> dict:
  """{torchvision name: (variable path, transform)} of a ResNet encoder."""
  names = {"conv1.weight": ("conv1/kernel", _conv),
           **_bn("bn1", "bn1/layer")}
  for s, blocks in enumerate(encoder.stages):
    for j, block in enumerate(blocks):
      t, p = f"layer{s + 1}.{j}", f"stages/{s}/{j}"
      for k in range(len(block.convs)):
        names[f"{t}.conv{k + 1}.weight"] = (f"{p}/convs/{k}/kernel", _conv)
        names.update(_bn(f"{t}.bn{k + 1}", f"{p}/norms/{k}/layer"))
      if block.downsample is not None:
        names[f"{t}.downsample.0.weight"] = (f"{p}/downsample/conv/kernel",
                                             _conv)
        names.update(_bn(f"{t}.downsample.1", f"{p}/downsample/norm/layer"))
  return names


def convnext_names(encoder: convnext.ConvNeXt) -> dict:
  """{torchvision name: (variable path, transform)} of a ConvNeXt encoder."""
  names = {"features.0.0.weight": ("stem_conv/kernel", _conv),
           "features.0.0.bias": ("stem_conv/bias", _same),
           **_ln("features.0.1", "stem_norm")}
  for s, blocks in enumerate(encoder.stages):
    if s:
      names.update(_ln(f"features.{2 * s}.0", f"down_norms/{s - 1}"))
      names.update(_dense(f"features.{2 * s}.1", f"down_convs/{s - 1}", _conv))
    for j in range(len(blocks)):
      t, p = f"features.{2 * s + 1}.{j}", f"stages/{s}/{j}"
      names.update(_dense(f"{t}.block.0", f"{p}/dwconv", _conv))
      names.update(_ln(f"{t}.block.2", f"{p}/norm"))
      names.update(_dense(f"{t}.block.3", f"{p}/fc1"))
      names.update(_dense(f"{t}.block.5", f"{p}/fc2"))
      names[f"{t}.layer_scale"] = (f"{p}/layer_scale", _flat_vector)
  if encoder.head_norm is not None:
    names.update(_ln("classifier.0", "head_norm"))
  return names


def efficientnet_names(encoder: efficientnet.EfficientNet) -> dict:
  """{torchvision name: (variable path, transform)} of an EfficientNet-B0."""
  def cna(t, p):  # Conv2dNormActivation: 0 conv, 1 BatchNorm.
    return {f"{t}.0.weight": (f"{p}/conv/kernel", _conv),
            **_bn(f"{t}.1", f"{p}/norm/layer")}
  names = cna("features.0", "stem")
  for s, blocks in enumerate(encoder.stages):
    for j, block in enumerate(blocks):
      t, p = f"features.{s + 1}.{j}.block", f"stages/{s}/{j}"
      i = 0
      if block.expand is not None:
        names.update(cna(f"{t}.0", f"{p}/expand"))
        i = 1
      names.update(cna(f"{t}.{i}", f"{p}/depthwise"))
      names.update(_dense(f"{t}.{i + 1}.fc1", f"{p}/se_reduce",
                          _squeeze_linear))
      names.update(_dense(f"{t}.{i + 1}.fc2", f"{p}/se_expand",
                          _squeeze_linear))
      names.update(cna(f"{t}.{i + 2}", f"{p}/project"))
  if encoder.head_conv is not None:
    names.update(cna("features.8", "head_conv"))
  return names


def vit_names(encoder: vit.ViT) -> dict:
  """{timm name: (variable path, transform)} of a ViT encoder."""
  names = {"cls_token": ("cls_token", _same), "pos_embed": ("pos_embed", _same),
           **_dense("patch_embed.proj", "patch_embed", _conv),
           **_ln("norm", "norm")}
  for i in range(len(encoder.blocks)):
    t, p = f"blocks.{i}", f"blocks/{i}"
    names.update(_ln(f"{t}.norm1", f"{p}/norm1"))
    names.update(_ln(f"{t}.norm2", f"{p}/norm2"))
    names.update(_dense(f"{t}.attn.qkv", f"{p}/attn/qkv"))
    names.update(_dense(f"{t}.attn.proj", f"{p}/attn/proj"))
    names.update(_dense(f"{t}.mlp.fc1", f"{p}/fc1"))
    names.update(_dense(f"{t}.mlp.fc2", f"{p}/fc2"))
  return names


@dataclasses.dataclass(frozen=True)
class Family:
  """How one encoder family's state dict maps to NNX variables."""
  names: Callable  # encoder -> {torch name: (variable path, transform)}
  first_layer: str  # Variable path of the input layer (channel adaptation).
  head: str  # Torch prefix of the classification head.
  # Torch prefixes used only by classifiers (skipped for dense encoders) and
  # variable prefixes no checkpoint holds (new layers keep their init).
  classifier_only: tuple[str, ...] = ()
  new_layers: tuple[str, ...] = ()


FAMILIES = {
    resnet.ResNet: Family(resnet_names, "conv1/kernel", "fc"),
    convnext.ConvNeXt: Family(convnext_names, "stem_conv/kernel",
                              "classifier.2", ("classifier.0.",)),
    efficientnet.EfficientNet: Family(efficientnet_names, "stem/conv/kernel",
                                      "classifier.1", ("features.8.",)),
    vit.ViT: Family(vit_names, "patch_embed/kernel", "head",
                    new_layers=("up4/", "up4b/", "up8/")),
}


def adapt_input_channels(kernel: np.ndarray, channels: int) -> np.ndarray:
  """(kh, kw, C_src, O) first-layer weights for `channels` inputs (SMP)."""
  source = kernel.shape[2]
  if channels == source:
    return kernel
  if channels == 1:
    return kernel.sum(axis=2, keepdims=True)
  index = np.arange(channels) % source
  return kernel[:, :, index] * (source / channels)


def _set(tree, path, value):
  *parents, leaf = path.split("/")
  key = lambda t, p: int(p) if p.isdigit() and int(p) in t else p
  for p in parents:
    tree = tree[key(tree, p)]
  tree[key(tree, leaf)] = value


def import_torch_weights(model: nnx.Module, path: str | os.PathLike[str]
                         ) -> dict[str, list[str]]:
  """Loads a torchvision/timm state dict into `model`'s encoder (and, for a
  classifier whose head shape fits, its head), in place.

  Returns {"loaded": [...], "skipped": [...]} (torch names). Raises
  ValueError listing missing and unexpected names when the file does not fit.
  """
  tensors = read_state_dict(path)
  encoder = model.encoder
  family = FAMILIES.get(type(encoder))
  if family is None:
    raise ValueError(f"No torch name mapping for {type(encoder).__name__}.")
  names = family.names(encoder)
  state = nnx.to_pure_dict(nnx.state(encoder))
  flat = flat_paths(state)
  targets = {p for p in flat if not p.endswith(("rngs/key", "rngs/count"))
             and not p.startswith(family.new_layers)}
  head_names = {f"{family.head}.weight", f"{family.head}.bias"}
  skipped = [k for k in tensors if k.endswith("num_batches_tracked") or
             (k not in names and k.startswith(family.classifier_only))]
  head_model = getattr(model, "head", None)
  head_fits = (isinstance(head_model, nnx.Linear) and
               f"{family.head}.weight" in tensors and
               tensors[f"{family.head}.weight"].shape ==
               head_model.kernel.get_value().shape[::-1])
  filled = {names[k][0] for k in names if k in tensors}
  missing = sorted(p for p in targets if p not in filled)
  unexpected = sorted(k for k in tensors if k not in names and k not in
                      head_names and k not in skipped)
  if missing or unexpected:
    raise ValueError(
        f"{path} does not fit {type(encoder).__name__}: missing (model "
        f"variables no tensor fills) {missing[:12]}"
        f"{' ...' if len(missing) > 12 else ''}; unexpected (file tensors "
        f"with no place) {unexpected[:12]}"
        f"{' ...' if len(unexpected) > 12 else ''}. BatchNorm checkpoints "
        "need norm='batch'.")
  loaded = []
  for key, (target, transform) in names.items():
    value = transform(tensors[key])
    if target == family.first_layer:
      value = adapt_input_channels(value, flat[target].shape[2])
    if value.shape != flat[target].shape:
      raise ValueError(f"{path}: {key} has shape {value.shape} after "
                       f"conversion; {target} needs {flat[target].shape}.")
    _set(state, target, jax.numpy.asarray(value, flat[target].dtype))
    loaded.append(key)
  new_state = nnx.state(encoder)
  nnx.replace_by_pure_dict(new_state, state)
  nnx.update(encoder, new_state)
  if head_fits:
    head_model.kernel.set_value(jax.numpy.asarray(
        _linear(tensors[f"{family.head}.weight"])))
    head_model.bias.set_value(jax.numpy.asarray(
        tensors[f"{family.head}.bias"]))
    loaded += sorted(head_names)
  else:
    skipped += sorted(head_names & set(tensors))
  return {"loaded": loaded, "skipped": skipped}
