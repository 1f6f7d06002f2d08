"""The composer: the one room that reads a config (see WORKSPACE.md).

  build.py   config sections -> components and typed settings
  modes.py   main.py's modes, composed from them

Everything below this package takes typed arguments. `from chameleon_jax
import components; components.model(config, ...)` keeps working: the
builders are re-exported here.
"""

from chameleon_jax.components.build import (
    TASKS, augment, config_digest, data_root, eval_input, eval_settings,
    image_size, ingest, ingest_options, load_members, loss, model,
    model_signature, open_dataset, parse_gin, predict_settings, restore,
    robustness_settings, target_key, task, to_dict, train_iterator,
    train_settings)

__all__ = [
    "TASKS", "augment", "config_digest", "data_root", "eval_input",
    "eval_settings", "image_size", "ingest", "ingest_options", "load_members",
    "loss", "model", "model_signature", "open_dataset", "parse_gin",
    "predict_settings", "restore", "robustness_settings", "target_key", "task",
    "to_dict", "train_iterator", "train_settings"]
