"""Shared fixtures. Tests that need ../shared skip cleanly when it is absent."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MAGNETIC_TILE = SHARED / "data" / "magnetic_tile"

# The suite's time is XLA:CPU compilation (hundreds of small programs, each
# compiled once), not running them. LLVM's optimisation level changes how
# fast the machine code runs and, at float rounding, the order of float
# operations (no fast-math either way): three AdamW steps of a small UNet
# give the same loss and parameters within 1.2e-7 (tests/test_xla_level.py;
# 1463 of 6508 differ in the last bits). At 0 the suite takes ~40 % less
# (1886 s -> 1092 s on a slow 2-core CPU; a zoo test 46 s -> 30 s); exact
# comparisons (resume, multi-process) compare runs at the same level. Set before any test starts a JAX
# backend; subprocess runs inherit it (`xla_flags` adds it to theirs).
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join(
      f for f in (os.environ.get("XLA_FLAGS", ""), TEST_XLA_FLAGS) if f)


def xla_flags(devices: int | None = None) -> str:
  """XLA_FLAGS for a subprocess: the suite's, with `devices` CPU devices."""
  count = (f"--xla_force_host_platform_device_count={devices}"
           if devices else "")
  return " ".join(f for f in (count, TEST_XLA_FLAGS) if f)


def pytest_configure(config):
  # Grain worker processes read absl flags; main.py parses them via app.run.
  from absl import flags
  flags.FLAGS.mark_as_parsed()
  # One pytest process imports both TensorFlow (export tests) and PyTorch
  # (weight-import parity tests). Importing timm/torch after TensorFlow
  # segfaults in triton's native module (torch 2.14.1, TF 2.21); the other
  # order works, so the test-only PyTorch stack is imported first.
  try:
    import timm  # noqa: F401  pylint: disable=unused-import
  except ImportError:
    pass
  config.addinivalue_line("markers", "slow: long checks, run with -m slow")


@pytest.fixture(autouse=True)
def _clear_gin():
  """components.parse_gin binds and locks gin's global config; a test that
  parses it must not leave its bindings or the lock to the next test."""
  yield
  import gin
  gin.clear_config()


def checkpoint_digest(workdir: Path) -> tuple[int, str]:
  """(step, hash of every parameter) of the latest checkpoint of a
  tests/tiny_config.py run, read in a fresh process."""
  code = (
      "import sys; from absl import flags; flags.FLAGS.mark_as_parsed()\n"
      "from tests.tiny_config import get_config\n"
      "from chameleon_jax import components\n"
      "from chameleon_jax.model_io.card import params_digest\n"
      "_, state, _, card = components.restore(get_config(), sys.argv[1], "
      "'latest')\n"
      "print(card['step'], params_digest(state.params))\n")
  out = subprocess.run([sys.executable, "-c", code, str(workdir)], cwd=REPO,
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0, out.stderr[-3000:]
  step, digest = out.stdout.strip().splitlines()[-1].split()
  return int(step), digest


@pytest.fixture(scope="session")
def magnetic_tile() -> Path:
  if not (MAGNETIC_TILE / "MT_Free").is_dir():
    pytest.skip("../shared/data/magnetic_tile is not available")
  return MAGNETIC_TILE


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
  """A small synthetic dataset version (grey, 32x32), built once per session."""
  from chameleon_jax.data import dataset, sources
  root = tmp_path_factory.mktemp("datasets")
  info, items = sources.synthetic_source(
      num_images=120, seed=3, channels=1, min_size=(32, 32), max_size=(32, 32),
      min_defect_fraction=0.01, max_defect_fraction=0.05)
  return dataset.build(info, items, root, "tiny",
                       dataset.IngestOptions(
                           {"train": 0.7, "val": 0.15, "test": 0.15}),
                       log=lambda *_: None)


def run_main(*args: str, env: dict | None = None, check: bool = True,
             timeout: float = 600) -> subprocess.CompletedProcess:
  """Runs `python main.py ARGS` from the repository root."""
  full_env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
  result = subprocess.run([sys.executable, "main.py", *args], cwd=REPO,
                          env=full_env, capture_output=True, text=True,
                          timeout=timeout)
  if check and result.returncode != 0:
    raise AssertionError(f"main.py {' '.join(args)} failed:\n"
                         f"{result.stdout}\n{result.stderr[-6000:]}")
  return result


_OPENED: list[str] | None = None


def _audit(event, args):
  if event == "open" and _OPENED is not None and args and \
      isinstance(args[0], (str, bytes, Path)):
    _OPENED.append(str(args[0]))


@contextlib.contextmanager
def opened_files():
  """Every path the process opens inside the block (one audit hook,
  installed once: audit hooks cannot be removed)."""
  global _OPENED
  if not getattr(sys, "_chameleon_audit", False):
    sys.addaudithook(_audit)
    sys._chameleon_audit = True
  _OPENED = []
  try:
    yield _OPENED
  finally:
    _OPENED = None


def _postgres_bin() -> Path | None:
  """The PostgreSQL server binaries (Debian's postgresql package)."""
  found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
  return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres_url():
  """A real PostgreSQL server for the test session: CHAMELEON_TEST_POSTGRES_URL
  if set, else a private cluster started here (initdb, pg_ctl; as the
  `postgres` user when running as root, since PostgreSQL refuses root) on a
  free port, stopped at the end. Without a server: skipped, or failed
  where CHAMELEON_REQUIRE_POSTGRES=1 (.ci/run installs Debian's postgresql
  and sets it, so CI cannot skip this silently)."""
  import shutil
  import socket
  import tempfile
  if os.environ.get("CHAMELEON_TEST_POSTGRES_URL"):
    yield os.environ["CHAMELEON_TEST_POSTGRES_URL"]
    return
  bindir = _postgres_bin()
  if bindir is None:
    message = "PostgreSQL server binaries not found (apt-get install postgresql)"
    if os.environ.get("CHAMELEON_REQUIRE_POSTGRES") == "1":
      pytest.fail(message)
    pytest.skip(message)
  root = Path(tempfile.mkdtemp(prefix="chameleon-pg-"))
  as_user = []
  if os.geteuid() == 0:
    shutil.chown(root, "postgres", "postgres")
    as_user = ["runuser", "-u", "postgres", "--"]
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  data = root / "data"
  run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True,
                                    capture_output=True, text=True)
  run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U",
      "chameleon", "--no-sync")
  run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"),
      "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
  try:
    yield f"postgresql://chameleon@127.0.0.1:{port}/postgres"
  finally:
    run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
  """The directory of Debian's `prometheus` and `promtool` binaries; skipped
  without them, failed where CHAMELEON_REQUIRE_PROMETHEUS=1 (.ci/run
  installs Debian's prometheus and sets it, so CI cannot skip silently)."""
  import shutil
  found = [shutil.which(b) for b in ("prometheus", "promtool")]
  if None in found:
    message = "prometheus/promtool not found (apt-get install prometheus)"
    if os.environ.get("CHAMELEON_REQUIRE_PROMETHEUS") == "1":
      pytest.fail(message)
    pytest.skip(message)
  return Path(found[0]).parent


@pytest.fixture(scope="session")
def chromium():
  """A headless Chromium driven by Selenium through Debian's `chromium` and
  `chromedriver` (never a downloaded browser); skipped without them, failed
  where CHAMELEON_REQUIRE_CHROMIUM=1 (.ci/run installs both and sets it).
  Yields a factory: chromium() -> a new WebDriver (closed at session end)."""
  import shutil
  browser = shutil.which("chromium") or shutil.which("chromium-browser")
  driver_bin = shutil.which("chromedriver")
  if browser is None or driver_bin is None:
    message = "chromium/chromedriver not found (apt-get install chromium " \
              "chromium-driver)"
    if os.environ.get("CHAMELEON_REQUIRE_CHROMIUM") == "1":
      pytest.fail(message)
    pytest.skip(message)
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  drivers = []

  def start():
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,800",
                     "--force-device-scale-factor=1"):
      options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(driver_bin))
    drivers.append(driver)
    return driver

  yield start
  for driver in drivers:
    with contextlib.suppress(Exception):
      driver.quit()
