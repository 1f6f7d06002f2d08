"""The regression gate on constructed per-image results, its bootstrap against
independent computations, and the ledger."""

import dataclasses
import json

import numpy as np
import pytest
from scipy import stats

from chameleon_jax.governance import gate, ledger

CLASSES = ("background", "pit", "scratch")
BOUNDS = (20.0, 200.0)  # tiny <= 20 px < small <= 200 px < large
THRESHOLDS = gate.Thresholds(epsilon=0.02, alpha=0.05, resamples=2000, seed=0,
                             max_false_alarm=0.2)


def rows(n_defect=200, n_clean=200, seed=0, false_alarms=10):
  """Per-image results: defect images alternate between the two classes,
  each with a tiny, a small and a large component."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n_defect):
    out.append({"id": f"d{i:04d}", "dice": float(rng.uniform(0.3, 0.9)),
                "defect": True, "false_alarm": False,
                "true_class": 1 + i % 2,
                "components": [[1 + i % 2, 9, bool(rng.random() < 0.6)],
                               [1 + i % 2, 80, bool(rng.random() < 0.8)],
                               [1 + i % 2, 900, True]]})
  for i in range(n_clean):
    out.append({"id": f"c{i:04d}", "dice": 0.0, "defect": False,
                "false_alarm": i < false_alarms, "true_class": 0,
                "components": []})
  return out


def evidence(name, rows_, dataset_hash="abc", classes=CLASSES):
  return gate.Evidence(name=name, dataset_hash=dataset_hash,
                       class_names=classes, rows=tuple(rows_),
                       identity={"params_sha256": name})


def verdict(candidate_rows, champion_rows, thresholds=THRESHOLDS):
  return gate.compare(evidence("cand", candidate_rows),
                      evidence("champ", champion_rows), thresholds, BOUNDS)


def comparison(v, name):
  return next(c for c in v["comparisons"] if c["name"] == name)


def test_identical_models_are_blessed():
  v = verdict(rows(), rows())
  assert v["blessed"], v["reasons"]
  assert not v["warnings"]
  for c in v["comparisons"]:
    assert c["delta"] == 0 and c["low"] == 0 and c["high"] == 0
  assert comparison(v, "size tiny")["n"] == 200


def test_a_class_worse_by_a_stated_amount_is_named():
  worse = rows()
  for r in worse:
    if r["true_class"] == 2:
      r["dice"] -= 0.1
  v = verdict(worse, rows())
  assert not v["blessed"]
  assert any(r.startswith("class scratch:") for r in v["reasons"])
  assert not any(r.startswith("class pit:") for r in v["reasons"])
  scratch = comparison(v, "class scratch")
  assert scratch["delta"] == pytest.approx(-0.1)
  assert scratch["significant_drop"] and scratch["n"] == 100
  # A drop smaller than epsilon on a class is tolerated.
  slight = rows()
  for r in slight:
    if r["true_class"] == 2:
      r["dice"] -= 0.005
  assert verdict(slight, rows())["blessed"]


def test_worse_only_on_tiny_defects_is_named():
  worse = rows()
  for r in worse:
    for component in r["components"]:
      if component[1] <= BOUNDS[0] and component[2] and r["id"] < "d0100":
        component[2] = False  # A third of the found blowholes now missed.
  v = verdict(worse, rows())
  assert comparison(v, "primary")["delta"] == 0
  assert not v["blessed"]
  assert [r.split(":")[0] for r in v["reasons"]] == ["size tiny"]


def test_the_primary_bound_and_the_false_alarm_budget():
  worse = rows()
  for r in worse:
    if r["defect"]:
      r["dice"] -= 0.05
  v = verdict(worse, rows())
  assert any(r.startswith("primary") for r in v["reasons"])
  alarms = rows(false_alarms=50)  # 50 of 200 defect-free: 0.25 > 0.2
  v = verdict(alarms, alarms)
  assert v["reasons"] == ["false-alarm rate 0.2500 > budget 0.2 (200 "
                          "defect-free images)."]


def test_twenty_defect_images_give_the_power_warning():
  v = verdict(rows(n_defect=20, seed=1), rows(n_defect=20, seed=2))
  assert any("too few defect images to detect a regression of 0.02: n = 20"
             in w for w in v["warnings"])


def test_unlike_evidence_is_refused():
  with pytest.raises(gate.GateError, match="dataset hashes differ.*abc.*xyz"):
    gate.compare(evidence("c", rows()), evidence("h", rows(), "xyz"),
                 THRESHOLDS, BOUNDS)
  with pytest.raises(gate.GateError, match="class lists differ"):
    gate.compare(evidence("c", rows()),
                 evidence("h", rows(), classes=("background", "pit", "dent")),
                 THRESHOLDS, BOUNDS)
  bare = [{k: v for k, v in r.items() if k != "components"} for r in rows()]
  with pytest.raises(gate.GateError, match="lacks \\['components'\\]"):
    verdict(bare, rows())
  with pytest.raises(gate.GateError, match="different images"):
    verdict(rows()[:-1], rows())


@pytest.mark.parametrize("values,match", [
    ({}, "empty"),
    ({**dataclasses.asdict(THRESHOLDS), "epsilonn": 0.1}, "unknown \\['epsilonn'\\]"),
    ({**dataclasses.asdict(THRESHOLDS), "resamples": 100}, "gate.resamples = 100"),
    ({**dataclasses.asdict(THRESHOLDS), "epsilon": float("nan")}, "gate.epsilon"),
])
def test_thresholds_fail_closed(values, match):
  with pytest.raises(gate.GateError, match=match):
    gate.Thresholds.from_dict(values)


def test_the_bootstrap_against_a_loop_and_scipy():
  cand, champ = rows(n_defect=60, n_clean=0, seed=3), rows(n_defect=60,
                                                            n_clean=0, seed=4)
  t = dataclasses.replace(THRESHOLDS, resamples=4000)
  primary = comparison(verdict(cand, champ, t), "primary")
  # The same draws, a brute-force loop over resamples (rows sorted by id).
  counts = np.concatenate(list(gate.resample_counts(60, t.resamples, t.seed)))
  assert counts.shape == (4000, 60) and (counts.sum(1) == 60).all()
  d = np.array([r["dice"] for r in cand]) - np.array([r["dice"] for r in champ])
  deltas = [np.repeat(d, c).mean() for c in counts]
  assert primary["low"] == pytest.approx(np.percentile(deltas, 2.5))
  assert primary["high"] == pytest.approx(np.percentile(deltas, 97.5))
  # scipy's own paired percentile bootstrap (other draws): close.
  res = stats.bootstrap(
      ([r["dice"] for r in cand], [r["dice"] for r in champ]),
      lambda x, y: np.mean(x) - np.mean(y), paired=True, n_resamples=4000,
      method="percentile", confidence_level=0.95, random_state=0)
  width = primary["high"] - primary["low"]
  assert primary["low"] == pytest.approx(res.confidence_interval.low,
                                         abs=0.1 * width)
  assert primary["high"] == pytest.approx(res.confidence_interval.high,
                                          abs=0.1 * width)


def test_holm_by_hand():
  # p sorted 0.01, 0.02, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.02), max(.., 0.04)
  assert gate.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
  assert gate.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_the_ledger_appends_and_refuses_a_corrupt_line(tmp_path):
  path = tmp_path / ledger.LEDGER
  ledger.append(path, "gate", {"blessed": True, "dataset_hash": "abc",
                               "candidate": {"params_sha256": "p1"}})
  ledger.append(path, "gate", {"blessed": False, "dataset_hash": "abc",
                               "candidate": {"params_sha256": "p2"}})
  records = ledger.read(path)
  assert [r["candidate"]["params_sha256"] for r in records] == ["p1", "p2"]
  assert ledger.blessing(records, "p1", "abc")
  assert ledger.blessing(records, "p2", "abc") is None
  assert ledger.blessing(records, "p1", "other") is None
  before = path.read_text()
  with open(path, "a") as f:
    f.write('{"kind": "gate", "blessed": tr\n')
  with pytest.raises(ledger.LedgerError, match=f"{path}:3: not JSON"):
    ledger.read(path)
  assert path.read_text().startswith(before)  # Nothing rewritten.
  with pytest.raises(ValueError, match="ledger kind"):
    ledger.append(path, "bless", {})
  json.loads(before.splitlines()[0])  # Lines are plain JSON.


def test_no_champion_is_refused_unless_first_deploy():
  refused = gate.first_deploy(evidence("cand", rows()), THRESHOLDS, False,
                              "models/x")
  assert not refused["blessed"]
  assert refused["reasons"][0].startswith("no champion: no version labelled "
                                          "'stable' in models/x")
  allowed = gate.first_deploy(evidence("cand", rows()), THRESHOLDS, True, "m")
  assert allowed["blessed"] and allowed["first_deploy"]
  noisy = gate.first_deploy(evidence("cand", rows(false_alarms=60)),
                            THRESHOLDS, True, "m")
  assert noisy["reasons"] == ["false-alarm rate 0.3000 > budget 0.2 (200 "
                              "defect-free images)."]


def test_a_split_without_defect_free_images_is_refused_and_recorded(tmp_path):
  v = verdict(rows(n_clean=0), rows(n_clean=0))
  assert not v["blessed"] and v["false_alarm_rate"] is None
  assert v["reasons"] == ["false-alarm rate: no defect-free image in the "
                          "split; the budget cannot be checked."]
  ledger.append(tmp_path / ledger.LEDGER, "gate", v)  # Strict JSON: no NaN.
  assert ledger.read(tmp_path / ledger.LEDGER)[0]["false_alarm_rate"] is None
