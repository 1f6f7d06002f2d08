"""The labelling loop end to end: a trained model pre-labels the images whose
masks were removed, a person (the browser) accepts one pre-label and draws
another, and the next ingest and training hold both labels."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from chameleon_jax.data import dataset, sources
from chameleon_jax.data.formats import geometry
from tests.conftest import REPO, run_main

pytest.importorskip("selenium")
from selenium.webdriver.common.keys import Keys  # noqa: E402

from tests import labelling_page as page  # noqa: E402

CONFIG = "--config=tests/tiny_config.py:folders"
UNLABELLED = ("s003", "s011", "s017", "s024", "s030", "s042")


def _folders(root):
  """The tiny synthetic data written as images/ and masks/ (one defect
  class), then the masks of UNLABELLED removed."""
  (root / "images").mkdir(parents=True)
  (root / "masks").mkdir()
  _, items = sources.synthetic_source(
      num_images=64, seed=3, channels=1, min_size=(32, 32),
      max_size=(32, 32), min_defect_fraction=0.05, max_defect_fraction=0.15,
      binary=True, empty_fraction=0.5)
  for n, item in enumerate(items):
    name = f"s{n:03d}"
    Image.fromarray(item.image[:, :, 0]).save(root / "images" / f"{name}.png")
    if name not in UNLABELLED:
      Image.fromarray(item.mask).save(root / "masks" / f"{name}.png")


def _wait_for_server(port, process, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if process.poll() is not None:
      raise AssertionError(f"--mode=label exited: {process.stdout.read()}")
    try:
      connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
      connection.request("GET", "/")
      if connection.getresponse().status == 200:
        return
    except OSError:
      time.sleep(0.5)
  raise TimeoutError("the label server did not answer")


@pytest.mark.e2e
def test_label_reingest_train_loop(tmp_path, chromium):
  import portpicker
  raw, data = tmp_path / "raw", tmp_path / "data"
  _folders(raw)
  common = [f"--config.data.root={data}",
            f"--config.data.source_kwargs.root={raw}",
            "--config.data.source_kwargs.channels=1",
            "--config.eval.decision=calibrated", "--config.eval.split=val",
            # Images without masks are listed as unlabelled, not bad.
            "--config.data.source_kwargs.missing_masks=unlabelled"]
  workdir = tmp_path / "run"
  first = run_main(CONFIG, f"--workdir={workdir}", "--mode=ingest,train,eval",
                   "--config.train.steps=30", *common)
  assert "quarantined: 6" in first.stdout
  run_main(CONFIG, f"--workdir={workdir}", "--mode=predict",
           f"--config.predict.input_dir={raw}/images", *common)
  # A file that does not decode, added since: no pre-label, no crash.
  (raw / "images" / "s999.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
  port = portpicker.pick_unused_port()
  server = subprocess.Popen(
      [sys.executable, "main.py", CONFIG, f"--workdir={workdir}",
       "--mode=label", f"--config.label.port={port}", *common],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  try:
    _wait_for_server(port, server)
    driver = chromium()
    page.open_page(driver, f"http://127.0.0.1:{port}/")
    rows = driver.execute_async_script(
        "const done = arguments[0]; fetch('/api/images', {headers: "
        "{'X-Label-Token': JSON.parse(document.getElementById('label-config')"
        ".textContent).token}}).then(r => r.json()).then(done);")
    # The six images without masks come first, most instructive first
    # (then s999, unlabelled and without a pre-label).
    assert {r["id"] for r in rows["images"][:6]} == set(UNLABELLED)
    assert rows["images"][6]["id"] == "s999"
    priorities = [r["priority"] for r in rows["images"][:6]]
    assert priorities == sorted(priorities, reverse=True)
    assert "calibrated" in rows["model_version"]
    # The pre-label is --mode=predict's decided mask for the same file.
    accepted = driver.execute_script("return labeller.state.id")
    with Image.open(workdir / "predictions" / f"{accepted}_mask.png") as m:
      predicted = np.asarray(m)
    np.testing.assert_array_equal(
        np.asarray(driver.execute_script(
            "return Array.from(labeller.state.prelabel)"),
            np.uint8).reshape(32, 32), predicted)
    driver.save_screenshot(str(tmp_path / "prelabel.png"))
    assert "pre-label accepted" in page.save(driver, "a")
    drawn = driver.execute_script("return labeller.state.id")
    assert drawn != accepted and drawn in UNLABELLED
    pointer = page.Pointer(driver)
    page.keys(driver, "x", "g", "1")  # Erase the pre-label; polygon, class 1.
    polygon = [pointer.click(x, y) for x, y in ((6, 5), (25, 8), (18, 27))]
    page.keys(driver, Keys.ENTER)
    assert "saved" in page.save(driver)
  finally:
    server.send_signal(signal.SIGINT)
    log, _ = server.communicate(timeout=60)
  assert server.returncode == 0, log
  assert "no pre-label for" in log and "s999.png" in log
  with Image.open(raw / "masks" / f"{accepted}.png") as m:
    np.testing.assert_array_equal(np.asarray(m), predicted)
  with Image.open(raw / "masks" / f"{drawn}.png") as m:
    np.testing.assert_array_equal(
        np.asarray(m), geometry.rasterise([("polygon", np.array(polygon), 1)],
                                          32, 32))
  audit = [json.loads(line) for line in
           (raw / "labels.jsonl").read_text().splitlines()]
  assert [(a["image"], a["prelabel"]) for a in audit] == [
      (accepted, "accepted"), (drawn, "rejected")]
  # Ingest again: a new version holding both labels (file hashes equal);
  # training runs on it.
  second = run_main(CONFIG, f"--workdir={tmp_path / 'run2'}",
                    "--mode=ingest,train", "--config.train.steps=3", *common)
  assert "quarantined: 5" in second.stdout  # 4 unlabelled, s999.
  quarantine = json.loads(
      (dataset.latest(data, "tiny").path / "quarantine.json").read_text())
  assert sum(q["reason"].startswith("unlabelled") for q in quarantine) == 4
  new = dataset.latest(data, "tiny")
  assert len([p for p in (data / "tiny").iterdir() if p.is_dir()]) == 2
  hashes = {i["id"]: i["hash"] for i in new.manifest["items"]}
  for image_id in (accepted, drawn):
    assert hashes[image_id] == sources.sha256(
        (raw / "images" / f"{image_id}.png").read_bytes(),
        (raw / "masks" / f"{image_id}.png").read_bytes())
  assert (tmp_path / "run2" / "checkpoints").is_dir()
