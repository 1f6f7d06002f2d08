"""`--mode=robustness` end to end on a tiny trained model (subprocess), and the
sweep's invariants in-process: agreement with `--mode=eval`, an ensemble of
identical members equal to its member, results independent of batch size."""

import json

import numpy as np
import pytest

from tests.conftest import run_main

CONFIG = "--config=tests/tiny_config.py"
CORRUPTIONS = '("gaussian_noise","shift_rotate","contrast","vignetting")'


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp("rob")
  workdir = root / "run"
  run_main(CONFIG, f"--workdir={workdir}", "--mode=ingest,train,eval",
           f"--config.data.root={root / 'data'}")
  return root, workdir


def _overrides(root, workdir, *extra):
  return [CONFIG, f"--workdir={workdir}", f"--config.data.root={root / 'data'}",
          f"--config.robustness.corruptions={CORRUPTIONS}",
          "--config.robustness.severities=(1,5)",
          "--config.robustness.epsilons=(0.0,0.0156862745)",
          "--config.robustness.attack_kwargs.pgd.steps=2",
          "--config.robustness.batch_size=8", *extra]


def test_report_end_to_end_with_an_ensemble_of_identical_members(trained):
  root, workdir = trained
  result = run_main(*_overrides(
      root, workdir, "--mode=robustness", "--config.robustness.max_images=0",
      f"--config.robustness.members=('{workdir}',)",
      "--config.robustness.other_data.name=tiny"))
  assert "== robustness: figures of argmax masks" in result.stdout
  assert "model: ensemble" in result.stdout
  out = workdir / "robustness"
  results = json.loads((out / "results.json").read_text())
  assert results["models"] == ["member0", "member1", "ensemble"]
  assert set(results["corruptions"]) == {"gaussian_noise", "shift_rotate",
                                         "contrast", "vignetting"}
  assert set(results["attacks"]) == {"fgsm", "pgd"}
  assert set(results["attacks"]["pgd"]["crafted_on"]) == {"ensemble",
                                                          "member:0"}
  # The clean numbers are those of --mode=eval on the same split.
  evaluated = json.loads((workdir / "eval" / "test_metrics.json").read_text())
  for key in ("defect_image_dice", "false_alarm_rate", "mean_defect_iou",
              "num_images"):
    assert results["clean"]["ensemble"][key] == pytest.approx(evaluated[key],
                                                              abs=1e-9)
  # Identical members: the ensemble equals each member everywhere, up to a
  # pixel or two: the log of the members' mean softmax can round two nearly
  # equal logits to a tie that argmax resolves otherwise than the member's
  # logits (seen on a 2026-12-01 CPU: 3e-6 in one class's Dice, under
  # contrast). A wrong combination would move these figures by far more.
  def same(by_model, tol=1e-4):
    a, b, e = (by_model[m] for m in results["models"])
    return a == b and all(a[k] == pytest.approx(e[k], abs=tol, nan_ok=True)
                          for k in a)
  assert same(results["clean"], tol=1e-9)
  for entry in results["corruptions"].values():
    assert all(same(m) for m in entry["severities"].values())
  for entry in results["attacks"].values():
    for crafted in entry["crafted_on"].values():
      per_eps = crafted["metrics"]
      for i in range(len(entry["epsilons"])):
        assert same({m: per_eps[m][i] for m in per_eps})
      assert crafted["norms"]["linf"][0] == 0.0
      assert 0 < crafted["norms"]["linf"][1] <= 4 / 255 + 1e-6
  # eps = 0 is the clean image.
  assert results["attacks"]["fgsm"]["crafted_on"]["ensemble"]["metrics"][
      "ensemble"][0]["defect_image_dice"] == pytest.approx(
          results["clean"]["ensemble"]["defect_image_dice"])
  assert results["generalisation"]["num_images"] == results["num_images"]
  summary = results["summary"]
  assert summary["mce"]["ensemble"] is not None
  assert set(summary["corruptions"]["contrast"]["ensemble"]) == {"mean", "ce"}
  for name in ("report.html", "corruptions.png", "attacks.png"):
    assert (out / name).stat().st_size > 1000
  grids = sorted(p.name for p in (out / "examples").glob("*.png"))
  assert "clean.png" in grids and "pgd_eps_4_255.png" in grids
  html = (out / "report.html").read_text()
  assert "data:image/png;base64," in html and "Generalisation" in html


@pytest.mark.e2e
def test_sweep_is_independent_of_batch_size(trained):
  from chameleon_jax.components import modes
  from tests import tiny_config
  root, workdir = trained
  results = []
  for batch in (4, 16):
    config = tiny_config.get_config()
    config.data.root = str(root / "data")
    config.robustness.corruptions = ("shift_rotate", "gaussian_noise")
    config.robustness.severities = (3,)
    config.robustness.attacks = ("pgd",)  # with its random start
    config.robustness.epsilons = (2 / 255,)
    config.robustness.max_images = 10
    config.robustness.batch_size = batch
    results.append(modes.robustness_sweep(config, str(workdir), log=lambda *_: None)[0])
    (workdir / "robustness" / "finished.json").unlink()
  a, b = results
  assert a["num_images"] == 10 and a["num_defect_images"] == 5
  for name in ("shift_rotate", "gaussian_noise"):
    ma, mb = a["corruptions"][name]["severities"]["3"]["model"], \
        b["corruptions"][name]["severities"]["3"]["model"]
    for key in ("defect_image_dice", "false_alarm_rate", "pixel_accuracy"):
      assert ma[key] == pytest.approx(mb[key], abs=1e-6), (name, key)
  fa = a["attacks"]["pgd"]["crafted_on"]["ensemble"]["metrics"]["model"][0]
  fb = b["attacks"]["pgd"]["crafted_on"]["ensemble"]["metrics"]["model"][0]
  assert fa["pixel_accuracy"] == pytest.approx(fb["pixel_accuracy"], abs=1e-6)


def test_bad_robustness_settings_are_named(trained):
  """In-process (main.py turns these errors into a failed exit with the
  message, as for every mode)."""
  from chameleon_jax.components import modes
  from tests import tiny_config
  root, workdir = trained
  bad = [({"corruptions": ("fgo",)}, ValueError, "unknown 'fgo'"),
         ({"attack_goal": "make_it_worse"}, ValueError, "make_it_worse"),
         ({"members": (str(root / "nothing"),)}, FileNotFoundError,
          "holds no trained model")]
  for overrides, error, message in bad:
    config = tiny_config.get_config()
    config.data.root = str(root / "data")
    config.robustness.update(overrides)
    with pytest.raises(error, match=message):
      modes.robustness_sweep(config, str(workdir), log=lambda *_: None)


def test_defects_to_background_attack_removes_defects(trained):
  from chameleon_jax.components import modes
  from tests import tiny_config
  root, workdir = trained
  config = tiny_config.get_config()
  config.data.root = str(root / "data")
  config.robustness.corruptions = ()
  config.robustness.attacks = ("bim",)
  config.robustness.attack_kwargs = {"bim": {"steps": 5}}
  config.robustness.attack_goal = "defects_to_background"
  config.robustness.epsilons = (0.0, 16 / 255)
  results, examples, finished = modes.robustness_sweep(config, str(workdir),
                                          log=lambda *_: None)
  finished.remove()
  entry = results["attacks"]["bim"]
  assert entry["kwargs"] == {"steps": 5, "targeted": True}
  clean, attacked = entry["crafted_on"]["ensemble"]["metrics"]["model"]
  assert clean == results["clean"]["model"]
  # Fewer predicted defect pixels everywhere (the tiny model over-predicts,
  # so its Dice may even rise): background gains, false alarms do not grow.
  assert attacked["false_alarm_rate"] <= clean["false_alarm_rate"]
  assert attacked["iou/background"] > clean["iou/background"]
  shown = examples["bim/eps=16/255"]
  assert np.abs(shown["perturbed"] - shown["image"]).max() <= 16 / 255 + 1e-6
  # The example shows the attacked images. Their defect pixels need not
  # fall on these few images (the tiny model can mark nearly every pixel a
  # defect, and the attack then only moves pixels between defect classes):
  # the figures above hold the direction over the whole split.
  clean_pred = examples["clean"]["predictions"]
  assert (shown["predictions"] != clean_pred).any()


def test_a_killed_sweep_resumes_from_its_finished_conditions(trained):
  from chameleon_jax.components import modes
  from tests import tiny_config
  root, workdir = trained

  def config(severities):
    c = tiny_config.get_config()
    c.data.root = str(root / "data")
    c.robustness.corruptions = ("contrast",)
    c.robustness.severities = severities
    c.robustness.attacks = ()
    c.robustness.max_images = 8
    return c

  _, _, finished = modes.robustness_sweep(config((2,)), str(workdir), log=lambda *_: None)
  saved = json.loads(finished.path.read_text())
  assert set(saved["values"]) == {"clean", "contrast/2"}
  # As if killed after "contrast/2": a marked value shows it is reused.
  saved["values"]["contrast/2"]["model"]["pixel_accuracy"] = -1.0
  finished.path.write_text(json.dumps(saved))
  again, _, finished = modes.robustness_sweep(config((2,)), str(workdir), log=lambda *_: None)
  assert again["corruptions"]["contrast"]["severities"]["2"]["model"][
      "pixel_accuracy"] == -1.0
  # Other settings: nothing is reused.
  other, _, finished = modes.robustness_sweep(config((2, 4)), str(workdir),
                                 log=lambda *_: None)
  assert other["corruptions"]["contrast"]["severities"]["2"]["model"][
      "pixel_accuracy"] >= 0
  finished.remove()
  assert not finished.path.exists()
