"""The one registry mechanism used by every zoo (models, losses, datasets, ...).

A `Registry` maps a name to a builder (a class or a function). Builders are made
gin-configurable under `<registry>.<name>` so that component defaults can be
rebound from `.gin` files without touching code, while ml_collections configs
pass explicit keyword arguments. Precedence: config value > gin binding > code
default. A registry whose entries have nothing to bind (config presets) is
made with `gin_configurable=False`.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, TypeVar

import gin

T = TypeVar("T", bound=Callable[..., Any])


class Registry:
  """A named collection of builders with clear errors on unknown names/args."""

  def __init__(self, kind: str, gin_configurable: bool = True):
    """`gin_configurable=False` for entries with nothing to bind (config
    presets take only the config); they can then be registered after gin's
    config is locked, e.g. when a config file is loaded late."""
    self.kind = kind
    self.gin_configurable = gin_configurable
    self._entries: dict[str, Callable[..., Any]] = {}
    self._metadata: dict[str, Any] = {}
    self._raw: dict[str, Callable[..., Any]] = {}  # Before gin wraps them.

  def register(self, name: str, metadata: Any = None) -> Callable[[T], T]:
    """Decorator: registers `fn` under `name`, gin-configurable as `kind.name`.

    Args:
      name: the entry's name (unique in this registry).
      metadata: what else the zoo records about the entry (e.g. a
        corruption's group and parameters); `metadata(name)` returns it.

    Raises:
      ValueError: `name` is registered twice.
    """

    def decorator(fn: T) -> T:
      if name in self._entries:
        raise ValueError(f"{self.kind} {name!r} is registered twice.")
      self._entries[name] = (gin.external_configurable(
          fn, name=name, module=self.kind) if self.gin_configurable else fn)
      self._metadata[name] = metadata
      self._raw[name] = fn
      return fn

    return decorator

  def names(self) -> list[str]:
    """Registered names, sorted."""
    return sorted(self._entries)

  def in_order(self) -> list[str]:
    """Registered names in registration order."""
    return list(self._entries)

  def parameters(self, name: str) -> dict[str, inspect.Parameter]:
    """The builder's own parameters (of a class: its __init__'s, without
    self), as written in code, whatever gin wraps around it."""
    self.get(name)
    raw = self._raw[name]
    params = dict(inspect.signature(
        raw.__init__ if inspect.isclass(raw) else raw).parameters)
    params.pop("self", None)
    return params

  def metadata(self, name: str) -> Any:
    """What was registered with `name` (KeyError naming close matches)."""
    self.get(name)
    return self._metadata[name]

  def get(self, name: str) -> Callable[..., Any]:
    if name not in self._entries:
      close = difflib.get_close_matches(name, self._entries, n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise KeyError(
          f"Unknown {self.kind} {name!r}.{hint} Registered: {self.names()}.")
    return self._entries[name]

  def build(self, name: str, **kwargs: Any) -> Any:
    """Builds `name` with `kwargs`, refusing arguments the builder lacks."""
    builder = self.get(name)
    params = self.parameters(name)
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
      unknown = sorted(set(kwargs) - set(params))
      if unknown:
        raise TypeError(
            f"{self.kind} {name!r} has no argument(s) {unknown}; "
            f"accepted: {sorted(params)}.")
    return builder(**kwargs)

  def __contains__(self, name: str) -> bool:
    return name in self._entries


MODELS = Registry("models")
ENCODERS = Registry("encoders")  # backbones shared by models (models/encoders)
LOSSES = Registry("losses")
DATASETS = Registry("datasets")
AUGMENTATIONS = Registry("augmentations")  # training augmentation presets
CORRUPTIONS = Registry("corruptions")  # robustness: image corruptions
ATTACKS = Registry("attacks")  # robustness: white-box attacks
DECODERS = Registry("decoders")  # segmentation decoders (models/decoders)
