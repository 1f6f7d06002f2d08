"""Monitoring: statistics, the reference, the log, the tests and the monitor.

Numbers are checked against independent float64 NumPy (the Laplacian as an
explicit stencil, MMD² from its kernel blocks) and the tests' levels by
simulation (seeded, so a run is reproducible).
"""

import json
import urllib.request

import numpy as np
import portpicker
import pytest

from chameleon_jax.monitoring import drift, events, reference, statistics
from chameleon_jax.monitoring.__main__ import main as monitor_main
from chameleon_jax.monitoring.monitor import Monitor

CLASSES = ("background", "scratch", "pit")


def _laplace_reference(grey: np.ndarray) -> np.ndarray:
  """The 4-neighbour Laplacian with mirrored borders (half-sample
  symmetric, scipy's 'reflect'), in float64."""
  p = np.pad(grey.astype(np.float64), 1, mode="symmetric")
  return (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]
          - 4 * p[1:-1, 1:-1])


def test_input_statistics_match_float64_numpy():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
  image[0, :5] = 255  # clipped pixels in every channel
  image[1, :3] = 0
  stats = statistics.input_statistics(image)
  x = image.astype(np.float64) / 255
  grey = x.mean(axis=2)
  for c in range(3):
    assert stats[f"mean/c{c}"] == pytest.approx(x[..., c].mean(), abs=1e-6)
    assert stats[f"std/c{c}"] == pytest.approx(x[..., c].std(), abs=1e-6)
  assert stats["brightness"] == pytest.approx(grey.mean(), abs=1e-6)
  assert stats["contrast"] == pytest.approx(grey.std(), abs=1e-6)
  assert stats["focus"] == pytest.approx(
      np.log10(_laplace_reference(grey).var()), abs=1e-5)
  clipped = np.mean((grey <= 0.5 / 255) | (grey >= 1 - 0.5 / 255))
  assert stats["clipped"] == pytest.approx(clipped) and clipped > 0
  assert (stats["height"], stats["width"], stats["channels"],
          stats["bit_depth"]) == (23, 31, 3, 8)
  wide = statistics.input_statistics(image.astype(np.uint16) * 257)
  assert wide["bit_depth"] == 16
  assert wide["brightness"] == pytest.approx(stats["brightness"], abs=1e-6)
  with pytest.raises(ValueError, match="1-4 channels"):
    statistics.input_statistics(np.zeros((4, 4, 5), np.uint8))


def test_output_statistics():
  p = np.zeros((4, 5))
  p[1, 1] = 0.9
  class_map = np.zeros((4, 5), np.int32)
  class_map[1, 1:3] = 2
  stats = statistics.output_statistics(p, True, 0.9, class_map, CLASSES)
  assert stats["p_defect"] == pytest.approx(0.9)
  assert stats["alarm"] == 1.0 and stats["area/scratch"] == 0.0
  assert stats["area/pit"] == pytest.approx(2 / 20)
  entropy = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1)) / 20
  assert stats["entropy"] == pytest.approx(entropy, rel=1e-6)


def _mmd_blocks(x, y, bandwidth):
  def k(a, b):
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * bandwidth**2))
  return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


def test_mmd_permutation_statistic_and_level():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(40, 5)), rng.normal(size=(15, 5))
  mmd, p = drift.mmd_permutation(x, y, 2.0, 199, np.random.default_rng(0))
  assert mmd == pytest.approx(_mmd_blocks(x, y, 2.0), rel=1e-9)
  assert 1 / 200 <= p <= 1
  # Under no drift, p-values are uniform: the level is kept.
  ps = [drift.mmd_permutation(rng.normal(size=(60, 4)),
                              rng.normal(size=(20, 4)), 2.0, 99,
                              np.random.default_rng(i))[1]
        for i in range(200)]
  assert np.mean(np.asarray(ps) < 0.05) <= 0.08
  shifted = drift.mmd_permutation(rng.normal(size=(60, 4)),
                                  rng.normal(size=(20, 4)) + 1.0, 2.0, 99,
                                  np.random.default_rng(0))[1]
  assert shifted == pytest.approx(1 / 100)


def test_random_projection_keeps_distances_and_the_shift():
  rng = np.random.default_rng(2)
  images = rng.random((120, 48, 48, 1)).astype(np.float32)
  images = np.clip(images * 0.5 + np.linspace(0, 0.5, 48)[None, None, :, None],
                   0, 1)
  thumbs = np.stack([statistics.thumbnail(i) for i in images])
  embedded = np.stack([statistics.embedding(i) for i in images])
  np.testing.assert_allclose(embedded, thumbs @ statistics.projection(),
                             rtol=1e-5, atol=1e-5)
  i, j = np.triu_indices(60, 1)
  ratio = (np.linalg.norm(embedded[i] - embedded[j], axis=1)
           / np.linalg.norm(thumbs[i] - thumbs[j], axis=1))
  # Johnson-Lindenstrauss: squared distances kept in expectation, most
  # within a small factor at 32 dimensions.
  assert np.mean(ratio**2) == pytest.approx(1.0, abs=0.1)
  low, high = np.percentile(ratio, [2.5, 97.5])
  assert 0.6 < low and high < 1.4
  brighter = np.stack([statistics.embedding(np.clip(i + 0.05, 0, 1))
                       for i in images[80:]])
  def p_value(ref, window):
    from scipy.spatial.distance import pdist
    return drift.mmd_permutation(ref, window, float(np.median(pdist(ref))),
                                 499, np.random.default_rng(0))[1]
  assert p_value(embedded[:80], embedded[80:]) > 0.05  # the same data
  bright_thumbs = np.stack([statistics.thumbnail(np.clip(i + 0.05, 0, 1))
                            for i in images[80:]])
  assert p_value(thumbs[:80], bright_thumbs) < 0.01  # in pixel space
  assert p_value(embedded[:80], brighter) < 0.01  # and after projection


def _rows(rng, n, brightness=0.5, noise=0.05, defect_share=0.3):
  """Rows like the log's, of images with a given brightness and noise."""
  rows = []
  for _ in range(n):
    image = np.clip(brightness + noise * rng.standard_normal((24, 24, 1)),
                    0, 1).astype(np.float32)
    defect = rng.random() < defect_share
    p = np.full((24, 24), 0.02)
    if defect:
      p[5:8, 5:8] = rng.uniform(0.6, 0.99)
    class_map = (p > 0.5).astype(np.int32)
    rows.append({"inputs": statistics.input_statistics(image),
                 "embedding": statistics.embedding(image).tolist(),
                 "outputs": statistics.output_statistics(
                     p, bool(class_map.any()), float(p.max()) if defect else 0,
                     class_map, CLASSES[:2]),
                 "defect": defect})
  return rows


def _reference(rows, budget=0.1):
  return reference.build([{k: r[k] for k in ("inputs", "embedding",
                                             "outputs")} for r in rows],
                         [r["defect"] for r in rows], CLASSES[:2], budget)


def test_reference_round_trip_and_calibration():
  rng = np.random.default_rng(3)
  ref = _reference(_rows(rng, 80))
  again = reference.Reference.from_json(json.loads(json.dumps(
      ref.to_json())))
  np.testing.assert_allclose(again.embeddings, ref.embeddings, atol=1e-6)
  assert again.inputs.keys() == ref.inputs.keys()
  assert again.alarms == ref.alarms and again.images == 80
  q = ref.calibrated(np.linspace(0, 1, 50))
  assert np.all(np.diff(q) >= 0) and q.min() >= 0 and q.max() <= 1
  assert ref.calibrated(0.02) == pytest.approx(0.0)  # clean images
  assert ref.calibrated(0.99) == pytest.approx(1.0)
  with pytest.raises(reference.ProfileError, match="somewhere: not a "):
    reference.Reference.from_json({"schema": 0}, "somewhere")
  with pytest.raises(reference.ProfileError, match="at least 2 images"):
    reference.build([], [], CLASSES, None)


def test_label_free_false_alarm_estimate_is_the_true_rate():
  # Calibrated scores: an image with score s has a defect with probability
  # s; alarms at s > 0.5. The estimate is checked against the labels.
  rng = np.random.default_rng(4)
  def sample(n):
    s = rng.beta(0.6, 1.5, n)
    return s, rng.random(n) < s
  s_ref, d_ref = sample(4000)
  rows = [{"inputs": {"x": 0.0}, "embedding": [0.0, float(i % 7)],
           "outputs": {"p_defect": float(s), "alarm": float(s > 0.5),
                       "alarm_score": float(s), "entropy": 0.1}}
          for i, s in enumerate(s_ref)]
  ref = reference.build(rows, list(d_ref), ("background", "defect"), 0.2)
  s, d = sample(4000)
  q = ref.calibrated(s)
  estimate = np.sum((1 - q) * (s > 0.5)) / np.sum(1 - q)
  truth = np.sum((s > 0.5) & ~d) / np.sum(~d)
  assert estimate == pytest.approx(truth, abs=0.02)


def test_window_tests_hold_their_level_and_see_a_shift():
  rng = np.random.default_rng(5)
  ref = _reference(_rows(rng, 200))
  settings = drift.Settings(permutations=999)
  clean = [drift.evaluate(ref, _rows(rng, 40), settings) for _ in range(10)]
  assert not any(v["drift"] for v in clean)
  dark = drift.evaluate(ref, _rows(rng, 40, brightness=0.4), settings)
  assert dark["drift"]
  fired = {t["test"]: t for t in dark["tests"] if t["alarm"]}
  assert fired["inputs"]["statistic"] in ("brightness", "mean/c0")
  assert fired["inputs"]["p_value"] < fired["inputs"]["threshold"] \
      < settings.level  # Bonferroni-divided
  assert dark["top_moved"][0][0] in ("brightness", "mean/c0")
  assert dark["top_moved"][0][3] < dark["top_moved"][0][2]  # darker
  alarms = drift.evaluate(ref, _rows(rng, 40, defect_share=0.9), settings)
  assert {t["test"] for t in alarms["tests"] if t["alarm"]} >= {"alarm_rate"}
  with pytest.raises(ValueError, match="smaller than min_images"):
    drift.evaluate(ref, _rows(rng, 5), settings)
  with pytest.raises(ValueError, match="cannot reach a p-value"):
    drift.Settings(alpha=0.01, permutations=100)


def test_bonferroni_divides_the_level_by_the_varying_statistics():
  ref = {"a": np.arange(50.0), "b": np.arange(50.0) * 2, "constant":
         np.ones(50)}
  window = {"a": np.arange(20.0) + 30, "b": np.arange(20.0) * 2,
            "constant": np.ones(20)}
  result = drift.ks_family(ref, window, 0.01, "inputs")
  assert result["statistic"] == "a"
  assert result["threshold"] == pytest.approx(0.005)  # 2 that vary


def _write(path, rows, model="tiny", version=1, **kwargs):
  writer = events.Writer(path, **kwargs)
  for r in rows:
    writer.write(events.event(model, version, "encoded", r["inputs"],
                              r["embedding"], r["outputs"], "test"))
  writer.close()


def test_reader_follows_rotation_and_skips_bad_lines(tmp_path):
  rng = np.random.default_rng(6)
  rows = _rows(rng, 30)
  log = tmp_path / "requests.jsonl"
  reader = events.Reader(log)
  writer = events.Writer(log, max_bytes=8000, backups=50)
  seen = []
  for i, r in enumerate(rows):
    writer.write(events.event("m", 1, "encoded", r["inputs"], r["embedding"],
                              r["outputs"], f"s{i}"))
    if i % 7 == 0:
      seen += reader.read()
  writer.close()
  assert len(list(tmp_path.glob("requests.jsonl.*"))) > 2  # it rotated
  seen += reader.read()
  assert [e["inputs"] for e in seen] == [r["inputs"] for r in rows]
  with open(log, "a") as f:
    f.write('{"truncated": \n')
    f.write(json.dumps({"type": "something.else", "data": {}}) + "\n")
    f.write(json.dumps({"type": events.EVENT_TYPE, "data": {"x": 1}}) + "\n")
    f.write('{"type": "' + events.EVENT_TYPE)  # still being written
  assert reader.read() == []
  assert reader.skipped == {"unreadable line": 1,
                            "not a served-image event": 1,
                            "event without model, version or statistics": 1}


def _served(tmp_path, rng):
  base = tmp_path / "serving"
  path = base / "tiny" / "1" / reference.RELATIVE_PATH
  path.parent.mkdir(parents=True)
  path.write_text(json.dumps(_reference(_rows(rng, 200)).to_json()))
  return base


def _gauge_lines(page: str, name: str) -> list[str]:
  return [line for line in page.splitlines() if line.startswith(name + "{")]


def test_monitor_windows_gauges_skips_and_report(tmp_path):
  from prometheus_client import generate_latest
  rng = np.random.default_rng(7)
  base = _served(tmp_path, rng)
  log = tmp_path / "logs" / "requests.jsonl"
  _write(log, _rows(rng, 40) + _rows(rng, 40, noise=0.15))
  _write(log, _rows(rng, 10), version=2)  # a version without a reference
  monitor = Monitor(base, log, window=40,
                    settings=drift.Settings(permutations=999))
  verdicts = monitor.poll()
  assert [v["drift"] for v in verdicts] == [False, True]
  page = generate_latest(monitor.gauges.registry).decode()
  alarms = _gauge_lines(page, "chameleon_monitor_drift_alarm")
  assert alarms and all('window="#1 (40 images' in a for a in alarms)
  assert any('test="inputs"' in a and 'statistic="focus"' in a
             for a in alarms) or any('statistic="contrast"' in a
                                     for a in alarms)
  assert 'top_moved="' in alarms[0]
  _write(log, _rows(rng, 40))  # the next clean window clears the alert
  assert [v["drift"] for v in monitor.poll()] == [False]
  page = generate_latest(monitor.gauges.registry).decode()
  assert _gauge_lines(page, "chameleon_monitor_drift_alarm") == []
  assert 'chameleon_monitor_drift{model="tiny",version="1"} 0.0' in page
  _write(log, _rows(rng, 5))
  assert monitor.finish() == []  # 5 < min_images: skipped, not "no drift"
  assert monitor.skipped == {"no reference profile for the version": 10,
                             "window smaller than min_images": 5}
  page = generate_latest(monitor.gauges.registry).decode()
  assert ('chameleon_monitor_skipped_events_total{reason="window smaller '
          'than min_images"} 5.0') in page
  ledger = (tmp_path / "logs" / "monitor" / "windows.jsonl").read_text()
  assert len(ledger.splitlines()) == 3
  html = (tmp_path / "logs" / "monitor" / "report.html").read_text()
  assert "<b>drift</b>" in html and html.count("data:image/png;base64,") == 2
  assert "The latest window that drifted: tiny/1 #1" in html
  assert "no reference profile for the version: 10" in html


def test_monitor_command_line(tmp_path, capsys):
  rng = np.random.default_rng(8)
  base = _served(tmp_path, rng)
  log = tmp_path / "requests.jsonl"
  _write(log, _rows(rng, 30))
  port = portpicker.pick_unused_port()
  assert monitor_main([f"--model_base_path={base}", f"--log={log}",
                       "--window=30", f"--port={port}", "--once"]) == 0
  out = capsys.readouterr().out
  assert "tiny/1 window #0 (30 images" in out and "no drift" in out
  page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read()
  assert (b'chameleon_monitor_windows_total{model="tiny",verdict="no drift",'
          b'version="1"} 1.0') in page
  _write(log, _rows(rng, 30, brightness=0.3))
  assert monitor_main([f"--model_base_path={base}", f"--log={log}",
                       "--window=30", "--port=0", "--once"]) == 1
  assert monitor_main([f"--model_base_path={base}", f"--log={log}",
                       "--window=5", "--port=0", "--once"]) == 2
  assert "smaller than the tests' min_images" in capsys.readouterr().err


def test_sliding_windows_and_the_last_partial_window(tmp_path):
  rng = np.random.default_rng(9)
  base = _served(tmp_path, rng)
  log = tmp_path / "requests.jsonl"
  _write(log, _rows(rng, 70))
  monitor = Monitor(base, log, window=40, stride=20,
                    settings=drift.Settings(permutations=999))
  assert [v["images"] for v in monitor.poll()] == [40, 40]  # 0-39, 20-59
  # 60-69 were never in a window: the last window (40-69) tests them.
  assert [v["images"] for v in monitor.finish()] == [30]
  _write(log, _rows(rng, 10))
  assert monitor.finish() == []
  assert monitor.skipped == {"window smaller than min_images": 10}
  with pytest.raises(ValueError, match="stride=50"):
    Monitor(base, log, window=40, stride=50)


def test_served_answers_of_both_tasks_and_signatures():
  import io
  from PIL import Image
  from export.request_log import served_answer
  probs = np.asarray([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
  p, alarm, score, class_map = served_answer(
      "classification", "serving_default", {"probabilities": probs}, 1)
  assert (p, alarm, score, class_map) == (pytest.approx(0.9), True,
                                          pytest.approx(0.9), None)
  assert served_answer("classification", "encoded",
                       {"probabilities": probs}, 0)[1] is False
  q = np.zeros((1, 3, 4, 2))
  q[..., 0] = 1.0
  q[0, 1, 2] = (0.25, 0.75)
  dense = {"probabilities": q, "class_map": (q[..., 1] > 0.5).astype(np.int32),
           "alarm": np.asarray([True]), "alarm_score": np.asarray([0.75])}
  def png(array, dtype):
    buffer = io.BytesIO()
    Image.fromarray(array.astype(dtype)).save(buffer, format="PNG")
    return buffer.getvalue()
  encoded = {"defect_probability_png_bytes": [png(np.rint(
                 q[0, ..., 1] * 65535), np.uint16)],
             "class_map_png_bytes": [png(dense["class_map"][0], np.uint8)],
             "alarm": dense["alarm"], "alarm_score": dense["alarm_score"]}
  for signature, outputs in (("serving_default", dense), ("encoded", encoded)):
    p, alarm, score, class_map = served_answer("segmentation", signature,
                                               outputs, 0)
    assert p.shape == (3, 4) and p[1, 2] == pytest.approx(0.75, abs=1e-4)
    assert alarm and score == 0.75 and class_map.sum() == 1


def test_reader_reads_a_new_file_on_a_reused_inode(tmp_path):
  rng = np.random.default_rng(10)
  log = tmp_path / "requests.jsonl"
  _write(log, _rows(rng, 5))
  reader = events.Reader(log)
  assert len(reader.read()) == 5
  log.unlink()  # an operator deletes the log; a new one may reuse the inode
  _write(log, _rows(rng, 2))
  assert len(reader.read()) == 2
