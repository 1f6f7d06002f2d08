"""--mode=plan on an ingested dataset, source options, and a new dataset in
one command (`--mode=ingest,plan,train,eval` with only its location and
format given)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chameleon_jax import components
from chameleon_jax import configfile
from chameleon_jax.components import plan as plan_mode
from chameleon_jax.data import catalog
from chameleon_jax.planning.machine import MachineProfile
from tests import tiny_config

REPO = Path(__file__).resolve().parents[1]
MACHINE = MachineProfile(platform="cpu", device_kind="cpu", devices=1,
                         memory_bytes=8 * 2**30, cpu_count=2,
                         seconds_per_gflop=0.03)


def _base(data_root: Path, profile: Path):
  config = tiny_config.get_config()
  config.data.root = str(data_root)
  config.plan.machine_profile = str(profile)
  return config


def test_plan_mode_writes_a_loadable_byte_identical_plan(tmp_path):
  profile = tmp_path / "machine.json"
  profile.write_text(MACHINE.to_json())
  config = _base(tmp_path / "data", profile)
  components.ingest(config, str(tmp_path), log=lambda *a: None)
  overrides = {"data.root": str(tmp_path / "data"), "train.batch_size": 4,
               "plan.machine_profile": str(profile)}
  planned = [plan_mode.plan(_base(tmp_path / "data", profile),
                            str(tmp_path / w), overrides, log=lambda *a: None)
             for w in ("w1", "w2")]
  for name in plan_mode.FILES:
    assert (tmp_path / "w1/plan" / name).read_bytes() == \
        (tmp_path / "w2/plan" / name).read_bytes(), name
  config = planned[0]
  # The user's value kept and recorded; the plan's own values set.
  assert config.train.batch_size == 4
  plan = json.loads((tmp_path / "w1/plan/plan.json").read_text())
  by_key = {c["key"]: c for c in plan["choices"]}
  assert by_key["train.batch_size"]["by"] == "user"
  assert by_key["train.batch_size"]["planned"] == 16
  assert by_key["data.scale"]["by"] == "plan"
  assert plan["user"]["train.batch_size"] == 4
  assert "plan.machine_profile" not in plan["user"]
  assert config.data.image_size == tuple(by_key["data.image_size"]["value"])
  assert config.model.kwargs.widths == tuple(
      by_key["model.kwargs"]["value"]["widths"])
  # The written file is the config returned, and the builders accept it.
  loaded = configfile.load(tmp_path / "w1/plan/config.py")
  assert loaded.to_dict() == config.to_dict()
  assert "plan.machine_profile" not in (tmp_path / "w1/plan/config.py").read_text()
  components.train_settings(config)
  components.eval_settings(config)
  components.augment(config)
  components.model(config, num_classes=4, in_channels=1)
  assert "| `train.batch_size` | `4` | user |" in \
      (tmp_path / "w1/plan/plan.md").read_text()


def test_source_options_are_checked_with_the_accepted_ones_named():
  with pytest.raises(ValueError, match=r"\['rot'\] are not options of "
                     r"source 'image_mask_folders'; it takes \[.*'root'"):
    catalog.checked("image_mask_folders", {"rot": "/x", "channels": None})
  with pytest.raises(ValueError, match=r"needs data.source_kwargs \['root'\]"):
    catalog.checked("image_mask_folders", {"channels": 1})
  assert catalog.checked("image_mask_folders",
                         {"root": "/x", "channels": None}) == {"root": "/x"}


def test_every_source_option_is_described_and_in_the_readme():
  assert set(catalog.options()) <= set(catalog.DESCRIPTIONS)
  assert catalog.table() in (REPO / "README.md").read_text(), (
      "README's source option table is stale: paste catalog.table()")


def _parts_dataset(root: Path, n: int = 90, size: int = 64) -> None:
  """Grey textured parts, 60 % defect-free, a dark scratch on the rest;
  masks 0/255 PNGs in images/ + masks/ (image_mask_folders' layout)."""
  rng = np.random.default_rng(0)
  (root / "images").mkdir(parents=True)
  (root / "masks").mkdir()
  for i in range(n):
    image = rng.normal(140, 12, (size, size)).clip(0, 255)
    mask = np.zeros((size, size), np.uint8)
    if i % 5 >= 3:
      r, c = rng.integers(8, size - 24, 2)
      mask[r:r + 3, c:c + 16] = 255
      image[mask > 0] -= 70
    Image.fromarray(image.astype(np.uint8)).save(root / "images" / f"p{i}.png")
    Image.fromarray(mask).save(root / "masks" / f"p{i}.png")


@pytest.mark.e2e
def test_a_new_dataset_in_one_command(tmp_path):
  _parts_dataset(tmp_path / "parts")
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "main.py", "--config=configs/segmentation.py",
       f"--workdir={workdir}", "--config.data.source=image_mask_folders",
       f"--config.data.source_kwargs.root={tmp_path / 'parts'}",
       "--config.data.source_kwargs.value_map={255: 1}",
       "--config.train.steps=80",
       "--mode=ingest,plan,train,eval"],
      cwd=REPO, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "== plan ==" in result.stdout
  assert "== eval on test: figures of" in result.stdout
  plan = json.loads((workdir / "plan/plan.json").read_text())
  by_key = {c["key"]: c for c in plan["choices"]}
  # The user's step count is kept (it makes the run the same on any
  # machine: the planned 25-minute budget fits it); the rest is planned.
  assert by_key["train.steps"]["by"] == "user"
  assert by_key["train.time_budget_minutes"]["value"] == 25.0
  assert by_key["data.crop_size"]["value"] == []  # 64 px: whole images
  budget = json.loads((workdir / "budget.json").read_text())
  assert budget["steps"] == 80
  metrics = json.loads((workdir / "eval/test_metrics.json").read_text())
  # The scratches are learnt (an argmax-mask figure: the plan calibrates).
  assert metrics.get("argmax/mean_defect_iou",
                     metrics.get("mean_defect_iou")) > 0.2, metrics
