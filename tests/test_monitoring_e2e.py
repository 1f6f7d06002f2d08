"""Monitoring end to end: a model trained and exported through main.py, the
stand-in server logging what it serves, the monitor as its own process, and
a real Prometheus server scraping it with the rendered alert rules.

A clean stream (the held-out test split) and a corrupted one (the same
images with Gaussian noise) are served by two servers into two logs; two
monitors read them; Prometheus fires ChameleonDrift for the corrupted
stream only, and the alert's description says why.
"""

import io
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import portpicker
import pytest
import yaml
from PIL import Image

from tests.conftest import REPO, run_main

pytestmark = pytest.mark.e2e
CONFIG = "--config=tests/tiny_config.py"
WINDOW = 40


def _png(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image[..., 0]).save(buffer, format="PNG")
  return buffer.getvalue()


def _serve(base: Path, log: Path, images: list[np.ndarray]) -> None:
  from export.client import GrpcClient
  from export.server import Server
  server = Server(str(base), portpicker.pick_unused_port(),
                  portpicker.pick_unused_port(), warmup=False,
                  request_log=str(log)).start()
  try:
    client = GrpcClient(f"127.0.0.1:{server.port}", "tiny")
    for image in images:
      client.predict_encoded([_png(image)])
    server.request_log.flush()
  finally:
    server.stop()


def _get(url: str) -> str:
  with urllib.request.urlopen(url, timeout=5) as response:
    return response.read().decode()


def _windows(page: str) -> float:
  """Windows tested, from the monitor's /metrics page."""
  return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
             if line.startswith("chameleon_monitor_windows_total{"))


def _wait(condition, timeout_s: float, what: str):
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    try:
      value = condition()
      if value:
        return value
    except OSError:
      pass
    time.sleep(0.5)
  raise AssertionError(f"timed out waiting for {what}")


def test_prometheus_fires_the_drift_alert_for_a_corrupted_stream_only(
    tmp_path, prometheus_bin):
  from chameleon_jax.data import dataset, records
  from infra import monitoring
  workdir = tmp_path / "work"
  run_main(CONFIG, f"--workdir={workdir}", "--mode=ingest,train,export",
           f"--config.data.root={workdir / 'data'}",
           "--config.data.source_kwargs.num_images=560",
           "--config.train.steps=5", "--config.export.platforms=('cpu',)",
           "--config.export.warmup_batch_sizes=(1,)")
  base = workdir / "serving"
  ds = dataset.latest(workdir / "data", "tiny")
  test = [records.decode_record(r)["image"] for p in ds.shard_paths("test")
          for r in records.read(Path(p))][:2 * WINDOW]
  assert len(test) == 2 * WINDOW
  rng = np.random.default_rng(0)
  noisy = [np.clip(x + rng.normal(0, 20, x.shape), 0, 255).astype(np.uint8)
           for x in test]
  logs = {"clean": tmp_path / "clean" / "requests.jsonl",
          "noisy": tmp_path / "noisy" / "requests.jsonl"}
  _serve(base, logs["clean"], test)
  _serve(base, logs["noisy"], noisy)
  ports = {k: portpicker.pick_unused_port() for k in logs}
  monitors = [subprocess.Popen(
      [sys.executable, "-m", "chameleon_jax.monitoring",
       f"--model_base_path={base}", f"--log={log}", f"--window={WINDOW}",
       f"--port={ports[k]}", "--poll_seconds=1"], cwd=REPO,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for k, log in logs.items()]
  rules = tmp_path / "rules.yaml"
  rules.write_text(yaml.safe_dump({"groups": monitoring.rule_groups("tiny")}))
  config = tmp_path / "prometheus.yml"
  config.write_text(yaml.safe_dump({
      "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
      "rule_files": [str(rules)],
      "scrape_configs": [{"job_name": f"monitor-{k}", "static_configs": [
          {"targets": [f"127.0.0.1:{p}"]}]} for k, p in ports.items()]}))
  web = portpicker.pick_unused_port()
  prometheus = subprocess.Popen(
      [str(prometheus_bin / "prometheus"), f"--config.file={config}",
       f"--storage.tsdb.path={tmp_path / 'tsdb'}",
       f"--web.listen-address=127.0.0.1:{web}"],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    pages = {k: _wait(lambda p=p: _windows(page := _get(
        f"http://127.0.0.1:{p}/metrics")) == 2 and page, 120,
        f"the {k} monitor's 2 windows") for k, p in ports.items()}
    assert "chameleon_monitor_drift_alarm{" not in pages["clean"]
    assert 'verdict="no drift",version="1"} 2.0' in pages["clean"]
    assert "chameleon_monitor_drift_alarm{" in pages["noisy"]
    assert 'verdict="drift",version="1"} 2.0' in pages["noisy"]

    def firing():
      alerts = json.loads(_get(f"http://127.0.0.1:{web}/api/v1/alerts"))
      return [a for a in alerts["data"]["alerts"]
              if a["state"] == "firing"]
    alerts = _wait(firing, 60, "a firing alert")
    time.sleep(3)  # a few more evaluations: nothing fires for clean data
    alerts = firing()
    assert {a["labels"]["alertname"] for a in alerts} >= {"ChameleonDrift"}
    assert {a["labels"]["job"] for a in alerts} == {"monitor-noisy"}
    drift = [a for a in alerts if a["labels"]["alertname"] == "ChameleonDrift"]
    text = drift[0]["annotations"]["description"]
    labels = drift[0]["labels"]
    assert labels["model"] == "tiny" and labels["version"] == "1"
    assert f"the {labels['test']} test on {labels['statistic']}" in text
    assert f"below its threshold {labels['threshold']}" in text
    assert "Window #" in text and "(40 images" in text and "Moved most" in text
    assert labels["top_moved"].split(" ")[0] in text
  finally:
    prometheus.terminate()
    for m in monitors:
      m.terminate()
    prometheus.wait(10)
    for m in monitors:
      m.wait(10)
