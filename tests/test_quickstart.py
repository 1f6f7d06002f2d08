"""The README's quickstart, end to end (slow: ~7 min on 2 cores).

Run with `python -m pytest -m slow tests/test_quickstart.py`.
"""

import json
import time

import pytest

from tests.conftest import run_main


@pytest.mark.slow
def test_quickstart_reaches_its_target(tmp_path):
  start = time.perf_counter()
  result = run_main("--config=experiments/quickstart.py",
                    f"--workdir={tmp_path}", "--mode=ingest,train,eval",
                    timeout=1200)
  minutes = (time.perf_counter() - start) / 60
  metrics = json.loads((tmp_path / "eval" / "test_metrics.json").read_text())
  print(f"quickstart: {minutes:.1f} min, test mean_defect_iou "
        f"{metrics['mean_defect_iou']:.4f}")
  assert "== eval on test: figures of argmax masks" in result.stdout
  assert metrics["mean_defect_iou"] >= 0.6
  assert minutes < 10
