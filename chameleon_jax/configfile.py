"""Config files written by the toolkit (a plan, a sweep's runs and winner).

A written config is an ordinary experiment file: it starts from the
template's `get_config()` and assigns, key by key, what differs from it, so
a person can read, edit and commit it and `main.py --config=` loads it as
it is. `flatten` gives a config's values by dotted key; `render` writes the
file; `load` reads one back as main.py would.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any

# The template every written config starts from: configs/segmentation.py.
TEMPLATE_MODULE = "segmentation"


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  """Nested dicts -> {"a.b.c": leaf}; an empty dict, or one whose keys are
  not all identifiers (a value map {255: 1}), is a leaf."""
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict) and value and all(
        isinstance(k, str) and k.isidentifier() for k in value):
      out.update(flatten(value, name + "."))
    else:
      out[name] = value
  return out


def template_values() -> dict[str, Any]:
  """The template's values by dotted key (what a written file need not
  repeat). Imported when called: the template imports the library."""
  module = importlib.import_module(f"configs.{TEMPLATE_MODULE}")
  return flatten(module.get_config().to_dict())


def differences(values: dict[str, Any], template: dict[str, Any],
                skip=()) -> dict[str, Any]:
  """The flat `values` that differ from the flat `template`, sorted, without
  keys under any prefix in `skip`."""
  return {k: v for k, v in sorted(values.items())
          if (k not in template or template[k] != v)
          and not any(k == s or k.startswith(s + ".") for s in skip)}


def render(docstring: str,
           sections: list[tuple[str, dict[str, Any]]]) -> str:
  """The text of a config file: the template's `get_config()`, then each
  (comment, {dotted key: value}) section's assignments."""
  lines = [f'"""{docstring.strip()}\n"""', "",
           f"from configs import {TEMPLATE_MODULE}", "", "",
           "def get_config():",
           '  """The template, then the values below."""',
           f"  config = {TEMPLATE_MODULE}.get_config()"]
  for comment, values in sections:
    if values:
      lines.append(f"  # {comment}")
      lines += [f"  config.{key} = {value!r}" for key, value in values.items()]
  lines += ["  return config", ""]
  return "\n".join(lines)


def load(path: str | os.PathLike[str], variant: str | None = None):
  """`get_config()` (or `get_config(variant)`) of a config file, as
  `main.py --config=path[:variant]` loads it."""
  spec = importlib.util.spec_from_file_location(
      f"config_{abs(hash(str(path)))}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if variant is None else module.get_config(variant)


def module(path: str | os.PathLike[str]):
  """The config file's module (for its `get_sweep()`)."""
  spec = importlib.util.spec_from_file_location(
      f"config_module_{abs(hash(str(path)))}", path)
  loaded = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(loaded)
  return loaded
