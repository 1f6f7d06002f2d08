"""The governed pipeline through main.py on the quickstart data: one command
takes a first model from raw data to `stable`; a degraded candidate (10
steps) is exported as canary but stopped by the gate with its reasons and
cannot be promoted; the champion gated against itself is blessed."""

import json

import pytest

from chameleon_jax.governance import ledger
from chameleon_jax.governance import model_card as mc
from tests.conftest import run_main

pytestmark = pytest.mark.e2e

CONFIG = "--config=experiments/quickstart.py"
SMALL = ("--config.data.source_kwargs.num_images=240",
         "--config.train.eval_every=100", "--config.train.checkpoint_every=100",
         "--config.robustness.max_images=8",
         "--config.robustness.corruptions=('gaussian_noise',)",
         "--config.robustness.severities=(3,)",
         "--config.robustness.attacks=('fgsm',)",
         "--config.robustness.epsilons=(0.0, 0.0078)",
         "--config.export.buckets=((96, 96),)",
         "--config.export.warmup_batch_sizes=(1,)")


def _main(workdir, data, models, *args, check=True):
  return run_main(CONFIG, f"--workdir={workdir}", *SMALL,
                  f"--config.data.root={data}",
                  f"--config.export.model_base_path={models}", *args,
                  check=check, timeout=1200)


def test_a_first_deployment_in_one_command_and_a_regression_stopped(tmp_path):
  from export import publish
  data, models = tmp_path / "data", tmp_path / "models"
  good, bad = tmp_path / "good", tmp_path / "bad"
  first = _main(good, data, models,
                "--mode=ingest,train,eval,robustness,export,gate,promote",
                "--config.train.steps=150", "--config.gate.first_deploy=True")
  assert "blessed: True" in first.stdout and "== promote ==" in first.stdout
  model = models / "synthetic"
  assert publish.read_labels(model) == {"canary": 1, "stable": 1}
  # The version carries its evaluation: the champion needs no workdir.
  stored = model / "1" / "assets.extra" / "evaluation"
  assert (stored / "test_per_image.json").is_file()
  # Its card: signed (experiments/cards/quickstart.yaml), the robustness
  # run, the gate's blessing and the promotion rendered into it.
  card = mc.read(model / "1" / "assets.extra" / "model_card" /
                 "model_card.json")
  assert card["human"]["missing"] == []
  assert card["robustness"]["worst_corruptions"][0]["name"] == \
      "gaussian_noise"
  assert [(g["kind"], g.get("blessed")) for g in card["gate"]] == [
      ("gate", True), ("promote", None)]
  assert card["evaluation"]["figures"][0]["name"] == "primary"
  assert card["decision"] is None  # The quickstart serves argmax masks.

  # A degraded candidate: exported as canary, stopped at the gate.
  stopped = _main(bad, data, models, "--mode=train,eval,export,gate,promote",
                  "--config.train.steps=10", "--config.train.warmup_steps=2",
                  check=False)
  assert stopped.returncode == 1, stopped.stdout + stopped.stderr[-3000:]
  assert "blessed: False" in stopped.stdout
  assert "primary (defect-image Dice)" in stopped.stdout
  assert "== promote ==" not in stopped.stdout
  assert publish.read_labels(model) == {"canary": 2, "stable": 1}
  verdict = json.loads((bad / "eval" / "gate.json").read_text())
  assert verdict["champion"]["name"] == "synthetic version 1"
  primary = verdict["comparisons"][0]
  assert primary["name"] == "primary" and primary["high"] < -0.02
  assert [c["name"] for c in verdict["comparisons"]][1:] == [
      "class crack", "class spot", "class stain", "size tiny", "size small",
      "size large"]
  assert publish.main([f"--model_base_path={models}", "--model=synthetic",
                       "--label=stable", "--version=2"]) == 1  # No blessing.
  card = (model / "2" / "assets.extra" / "model_card" / "MODEL_CARD.md")
  assert "blessed False" in card.read_text()
  assert "reason: primary (defect-image Dice)" in card.read_text()

  # The champion against itself: blessed (every delta 0).
  same = _main(good, data, models, "--mode=gate")
  assert "blessed: True" in same.stdout
  kinds = [(r["kind"], r.get("blessed")) for r in ledger.read(
      model / ledger.LEDGER)]
  assert kinds == [("gate", True), ("promote", None), ("gate", False),
                   ("gate", True)]
