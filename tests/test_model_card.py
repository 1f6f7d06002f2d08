"""The model card: its figures against independent computations, the
person's fields, the schema, the renderings and the refresh from the ledger."""

import json

import jsonschema
import numpy as np
import pytest
import yaml
from scipy import stats

from chameleon_jax.governance import card_render, gate, ledger
from chameleon_jax.governance import model_card as mc
from tests.test_gate import BOUNDS, CLASSES, rows

DIGEST = "ab" * 32
SIGNED = {"owner": "QA line 3 <qa3@example.com>",
          "intended_use": "Flag parts for a person to inspect.",
          "out_of_scope_uses": ["Unattended rejection", "Other products"],
          "known_limitations": "Tiny pits under 5 px are missed."}


def write_yaml(path, values):
  path.write_text(yaml.safe_dump(values))
  return path


def test_intervals_agree_with_scipy_bootstrap():
  data = rows(n_defect=120, n_clean=80, seed=4)
  evidence = gate.Evidence("m", "h", CLASSES, tuple(data), {})
  figures = {f["name"]: f for f in gate.intervals(evidence, BOUNDS, 4000, 0)}
  defect = np.array([r["defect"] for r in data], float)
  dice = np.array([r["dice"] for r in data])
  tiny_found = np.array([sum(hit for _, a, hit in r["components"] if a <= 20)
                         for r in data], float)
  tiny_count = np.array([sum(a <= 20 for _, a, _ in r["components"])
                         for r in data], float)
  for name, value, weight in (("primary", dice * defect, defect),
                              ("size tiny", tiny_found, tiny_count)):
    f = figures[name]
    assert f["value"] == pytest.approx(value.sum() / weight.sum(), abs=1e-12)
    assert f["n"] == int(weight.sum())
    reference = stats.bootstrap(
        (value, weight), lambda v, w, axis=-1: v.sum(axis) / w.sum(axis),
        paired=True, vectorized=True, n_resamples=4000, method="percentile",
        random_state=np.random.default_rng(1)).confidence_interval
    assert f["low"] == pytest.approx(reference.low, abs=0.01)
    assert f["high"] == pytest.approx(reference.high, abs=0.01)
    assert f["low"] < f["value"] < f["high"]
  pit = figures["class pit"]
  assert pit["n"] == 60
  assert pit["value"] == pytest.approx(np.mean([r["dice"] for r in data if
                                                r["true_class"] == 1]))


def test_false_alarm_interval_is_clopper_pearson():
  data = rows(n_defect=20, n_clean=50, false_alarms=7)
  ev = mc.evaluation_section({"checkpoint_step": 3}, data, CLASSES, "test",
                             BOUNDS)
  fa = ev["false_alarm"]
  assert fa["value"] == pytest.approx(7 / 50) and fa["n"] == 50
  # Clopper-Pearson from the beta distribution, written out.
  assert fa["low"] == pytest.approx(stats.beta.ppf(0.025, 7, 44), abs=1e-9)
  assert fa["high"] == pytest.approx(stats.beta.ppf(0.975, 8, 43), abs=1e-9)
  no_clean = mc.evaluation_section({}, rows(n_defect=10, n_clean=0), CLASSES,
                                   "test", BOUNDS)["false_alarm"]
  assert no_clean["value"] is None and "not measurable" in no_clean["note"]


def test_human_fields_are_read_checked_and_listed_when_missing(tmp_path):
  full = mc.read_human(write_yaml(tmp_path / "full.yaml", SIGNED))
  assert full["missing"] == []
  assert full["out_of_scope_uses"] == ["Unattended rejection",
                                       "Other products"]
  assert full["known_limitations"] == ["Tiny pits under 5 px are missed."]
  part = mc.read_human(write_yaml(tmp_path / "part.yaml",
                                  {"owner": "QA", "intended_use": "  "}))
  assert part["missing"] == ["intended_use", "out_of_scope_uses",
                             "known_limitations"]
  assert mc.read_human("")["missing"] == list(mc.HUMAN_FIELDS)
  with pytest.raises(mc.CardError, match=r"bad\.yaml: unknown keys \['ownr'\]"):
    mc.read_human(write_yaml(tmp_path / "bad.yaml", {"ownr": "x"}))
  with pytest.raises(mc.CardError, match="owner = 3: expected text"):
    mc.read_human(write_yaml(tmp_path / "num.yaml", {"owner": 3}))
  with pytest.raises(mc.CardError, match="no such file"):
    mc.read_human(tmp_path / "absent.yaml")
  (tmp_path / "list.yaml").write_text("- a\n- b\n")
  with pytest.raises(mc.CardError, match="a YAML mapping expected"):
    mc.read_human(tmp_path / "list.yaml")


def make_card(dataset_dir, human, records=()):
  data = rows(n_defect=30, n_clean=30, false_alarms=3)
  manifest = json.loads((dataset_dir / "manifest.json").read_text())
  metadata = {"platforms": ["cpu"], "xla_call_module_version": 10,
              "verification": {"checks": [{"max_abs_logit_diff": 2e-5},
                                          {"max_abs_logit_diff": 3e-5}]},
              "input_contract": {"buckets": [[32, 32]], "input_dtype": "uint8",
                                 "channels": 1, "flip_tta": False}}
  return mc.build(
      model={"name": "tiny", "version": 2, "task": "segmentation",
             "class_names": list(CLASSES), "architecture": {"name": "unet"},
             "params_sha256": DIGEST, "checkpoint_step": 5,
             "checkpoint": "best", "config_sha256": "cd" * 32},
      human=human,
      data=mc.data_section(dataset_dir, "synthetic", {"seed": 3}),
      training={"template": "configs/segmentation.py",
                "config": "config.json (the config --mode=train ran with)",
                "differences": {"train.steps": {"value": 5, "template": 1000},
                                "data.source_kwargs.seed": {"value": 3}}},
      evaluation=mc.evaluation_section({"checkpoint_step": 5,
                                        "num_images": 60.0}, data, CLASSES,
                                       "test", BOUNDS),
      decision=mc.decision_section({"rule": {"threshold": 0.6},
                                    "max_false_alarm": 0.1,
                                    "chosen_on": "val", "validation": {}}),
      robustness=None, gate=mc.gate_section(list(records), DIGEST),
      export=mc.export_section(metadata), stack=mc.stack_section()), manifest


def test_card_follows_its_schema_and_the_dataset(tiny_dataset, tmp_path):
  records = [
      {"kind": "gate", "time": "t1", "blessed": True, "reasons": [],
       "warnings": ["few"], "candidate": {"params_sha256": DIGEST},
       "champion": {"name": "tiny version 1"},
       "comparisons": [{"name": "primary", "delta": 0.01, "low": -0.01,
                        "high": 0.03, "n": 30}]},
      {"kind": "gate", "time": "t2", "blessed": False,
       "candidate": {"params_sha256": "ff" * 32}},  # Another model's.
      {"kind": "promote", "time": "t3", "version": 2, "previous": 1,
       "params_sha256": DIGEST}]
  card, manifest = make_card(tiny_dataset.path, mc.read_human(""), records)
  schema = json.loads(mc.SCHEMA.read_text())
  jsonschema.Draft202012Validator.check_schema(schema)
  jsonschema.validate(card, schema)
  for split, entry in manifest["splits"].items():
    assert card["data"]["splits"][split]["images"] == entry["count"]
    assert card["data"]["splits"][split]["defect_free"] == entry["empty"]
  assert card["data"]["dataset_hash"] == manifest["dataset_hash"]
  assert [g["time"] for g in card["gate"]] == ["t1", "t3"]
  assert card["gate"][0]["primary"]["low"] == -0.01
  assert card["export"]["max_abs_logit_diff"] == 3e-5
  assert mc.missing_human(card) == list(mc.HUMAN_FIELDS)
  broken = {k: v for k, v in card.items() if k != "evaluation"}
  with pytest.raises(jsonschema.ValidationError, match="evaluation"):
    jsonschema.validate(broken, schema)


def test_markdown_front_matter_and_a_self_contained_page(tiny_dataset,
                                                          tmp_path):
  human = mc.read_human(write_yaml(
      tmp_path / "h.yaml", {**SIGNED, "owner": "<script>alert(1)</script>"}))
  card, _ = make_card(tiny_dataset.path, human)
  text = card_render.markdown(card)
  front = yaml.safe_load(text.split("---\n")[1])
  result = front["model-index"][0]["results"][0]
  assert result["task"]["type"] == "image-segmentation"
  assert result["dataset"]["revision"] == card["data"]["dataset_hash"]
  primary = card["evaluation"]["figures"][0]
  assert result["metrics"][0]["value"] == round(primary["value"], 4)
  assert result["metrics"][-1]["type"] == "false_alarm_rate"
  assert "Not signed" not in text and "**missing**" not in text
  page = card_render.write(tmp_path / "card", card)
  html = page.read_text()
  assert html.count("data:image/png;base64,") == 2
  assert "<script>" not in html and "&lt;script&gt;" in html
  assert "http://" not in html and "https://" not in html
  assert json.loads((tmp_path / "card" / "model_card.json").read_text()) \
      == json.loads(json.dumps(card))
  assert (tmp_path / "card" / "metrics.png").read_bytes()[:4] == b"\x89PNG"
  unsigned, _ = make_card(tiny_dataset.path, mc.read_human(None))
  assert "Not signed" in card_render.markdown(unsigned)


def test_hugging_face_reads_the_model_index(tiny_dataset, tmp_path):
  """The front matter as huggingface_hub (the anchor, a test dependency
  through timm) parses it: one EvalResult per figure, offline."""
  hub = pytest.importorskip("huggingface_hub")
  card, _ = make_card(tiny_dataset.path, mc.read_human(None))
  card_render.write(tmp_path, card)
  parsed = hub.ModelCard.load(tmp_path / "MODEL_CARD.md")
  assert parsed.data.model_name == "tiny version 2"
  results = parsed.data.eval_results
  figures = [f for f in card["evaluation"]["figures"] if f["value"] is not None]
  assert len(results) == len(figures) + 1  # + the false-alarm rate
  for result, figure in zip(results, figures):
    assert result.metric_value == round(figure["value"], 4)
    assert result.task_type == "image-segmentation"
    assert result.dataset_revision == card["data"]["dataset_hash"]
    assert result.dataset_split == "test" and result.verified is False
  assert results[-1].metric_type == "false_alarm_rate"


def test_refresh_renders_the_ledger_and_keeps_the_rest(tiny_dataset,
                                                       tmp_path):
  card, _ = make_card(tiny_dataset.path, mc.read_human(None))
  directory = tmp_path / "card"
  card_render.write(directory, card)
  path = tmp_path / ledger.LEDGER
  ledger.append(path, "force", {"version": 2, "previous": None,
                                "params_sha256": DIGEST, "reason": "hotfix"})
  signed = mc.read_human(write_yaml(tmp_path / "h.yaml", SIGNED))
  card_render.refresh(directory, ledger.read(path), human=signed)
  after = mc.read(directory / "model_card.json")
  assert [g["kind"] for g in after["gate"]] == ["force"]
  assert after["gate"][0]["reason"] == "hotfix"
  assert mc.missing_human(after) == []
  assert after["evaluation"] == json.loads(json.dumps(card["evaluation"]))
  assert "force: stable (none) -> 2 (reason: hotfix)" in (
      directory / "MODEL_CARD.md").read_text()
  (directory / "model_card.json").write_text('{"schema_version": 0}')
  with pytest.raises(mc.CardError, match="schema_version 0"):
    card_render.refresh(directory, [])


def test_robustness_headline_of_the_exported_checkpoint_only():
  models = ["member 0", "member 1", "ensemble"]
  clean = {"member 0": 0.60, "member 1": 0.50, "ensemble": 0.65}
  results = {
      "models": models, "num_images": 32,
      "members": [{"workdir": "a", "checkpoint": "best", "step": 7},
                  {"workdir": "b", "checkpoint": "best", "step": 9}],
      "clean": {m: {"defect_image_dice": v} for m, v in clean.items()},
      "corruptions": {name: {"group": "noise"} for name in "abcd"},
      "summary": {"mce": {m: 1.2 for m in models}, "corruptions": {
          name: {m: {"mean": mean, "ce": 1.1} for m in models}
          for name, mean in zip("abcd", (0.5, 0.1, 0.4, 0.3))}},
      "attacks": {"fgsm": {"epsilons": [0.0, 2 / 255], "crafted_on": {
          "ensemble": {"metrics": {"ensemble": [
              {"defect_image_dice": 0.65}, {"defect_image_dice": 0.2}],
                                   "member 0": [
              {"defect_image_dice": 0.60}, {"defect_image_dice": 0.3}]}}}}}}
  r = mc.robustness_section(results, step=7)
  assert [c["name"] for c in r["worst_corruptions"]] == ["b", "d", "c"]
  assert r["ensemble_gain"] == pytest.approx(0.05)
  assert r["ensemble_clean"] == 0.65
  assert r["worst_attacks"] == [{"name": "fgsm", "crafted_on": "ensemble",
                                 "epsilon": 2 / 255, "value": 0.3}]
  assert r["clean"] == 0.60 and r["model"] == "member 0"
  assert r["metric"] == "argmax/defect_image_dice"  # Said to be argmax's.
  assert mc.robustness_section(results, step=8) is None  # Another checkpoint.
