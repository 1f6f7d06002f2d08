"""A rendered JobSet's pods, reproduced as processes on this machine.

What each pod gets in the cluster, and its local stand-in:
  - the container's command and args, exactly as rendered;
  - its env, with `valueFrom.fieldRef` on the Job completion index annotation
    resolved to the pod's index (other references are refused, so nothing
    the cluster would provide is silently missing);
  - the coordinator `<jobset>-worker-0-0.<jobset>:PORT` (pod 0 through the
    headless service) resolved to 127.0.0.1 and a free port per attempt
    (recreated pods get new addresses in the cluster too);
  - the shared volume's mount path mapped to a local directory.
Restarts follow the JobSet's failure policy with the Recreate strategy: when
any pod fails, every pod of the attempt is killed and all are started again,
at most `failurePolicy.maxRestarts` times.

  python -m infra.podenv train.yaml --shared=DIR
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import yaml

from infra import manifests

REPO = Path(__file__).resolve().parents[1]


def _container(jobset: dict) -> tuple[dict, int]:
  (replicated,) = jobset["spec"]["replicatedJobs"]
  job = replicated["template"]["spec"]
  (container,) = job["template"]["spec"]["containers"]
  return container, int(job["parallelism"])


def pod_command(jobset: dict, index: int, shared: Path, port: int
                ) -> tuple[list[str], dict[str, str]]:
  """argv and environment of pod `index` (local paths and address)."""
  container, hosts = _container(jobset)
  if not 0 <= index < hosts:
    raise ValueError(f"pod index {index}; the JobSet has {hosts} pods.")
  mount = manifests.SHARED
  local = lambda s: s.replace(mount, str(shared))  # noqa: E731
  argv = [local(a) for a in container["command"] + container.get("args", [])]
  if argv[0] == "python":
    argv[0] = sys.executable
  env = {}
  index_ref = f"metadata.annotations['{manifests.INDEX_ANNOTATION}']"
  for var in container.get("env", []):
    if "value" in var:
      value = var["value"]
    elif var.get("valueFrom", {}).get("fieldRef", {}).get(
        "fieldPath") == index_ref:
      value = str(index)
    else:
      raise ValueError(f"env {var['name']}: {var.get('valueFrom')} has no "
                       "local equivalent.")
    env[var["name"]] = value
  # Kubernetes sets this for every pod of an Indexed Job.
  env["JOB_COMPLETION_INDEX"] = str(index)
  if "JAX_COORDINATOR_ADDRESS" in env:
    host, _, _ = env["JAX_COORDINATOR_ADDRESS"].rpartition(":")
    expected = manifests.coordinator_address(jobset["metadata"]["name"])
    if f"{host}:{manifests.COORDINATOR_PORT}" != expected:
      raise ValueError(f"coordinator {host} is not pod 0 through the "
                       f"JobSet's headless service ({expected}).")
    env["JAX_COORDINATOR_ADDRESS"] = f"127.0.0.1:{port}"
  return argv, env


class LocalJobSet:
  """Runs the pods of `jobset` with JobSet restart semantics."""

  def __init__(self, jobset: dict, shared: Path,
               pick_port: Callable[[], int], base_env: dict | None = None,
               log_dir: Path | None = None):
    self.jobset = jobset
    self.shared = Path(shared)
    self.pick_port = pick_port
    self.base_env = dict(os.environ if base_env is None else base_env)
    self.log_dir = Path(log_dir or self.shared / "pod-logs")
    self.max_restarts = jobset["spec"].get("failurePolicy", {}).get(
        "maxRestarts", 0)
    self.restarts = 0
    self.pods: list[subprocess.Popen] = []

  def _start(self) -> None:
    _, hosts = _container(self.jobset)
    port = self.pick_port()
    self.log_dir.mkdir(parents=True, exist_ok=True)
    self.pods = []
    for index in range(hosts):
      argv, env = pod_command(self.jobset, index, self.shared, port)
      log = open(self.log_dir / f"attempt{self.restarts}-pod{index}.log", "w")
      self.pods.append(subprocess.Popen(
          argv, cwd=REPO, env={**self.base_env, **env}, stdout=log,
          stderr=subprocess.STDOUT, start_new_session=True))
      log.close()

  def kill_all(self) -> None:
    for pod in self.pods:
      if pod.poll() is None:
        os.killpg(pod.pid, signal.SIGKILL)
    for pod in self.pods:
      pod.wait()

  def run(self, timeout: float = 1800, poll: Callable[["LocalJobSet"], None]
          | None = None) -> int:
    """Runs to success; returns the number of restarts. Raises when the
    restarts are exhausted or `timeout` seconds pass."""
    deadline = time.time() + timeout
    self._start()
    try:
      while True:
        codes = [p.poll() for p in self.pods]
        if all(c == 0 for c in codes):
          return self.restarts
        if any(c not in (None, 0) for c in codes):
          self.kill_all()  # The Job failed: the JobSet recreates all pods.
          if self.restarts >= self.max_restarts:
            raise RuntimeError(f"JobSet failed after {self.restarts} restarts "
                               f"(exit codes {codes}); logs in {self.log_dir}.")
          self.restarts += 1
          self._start()
        if time.time() > deadline:
          raise TimeoutError(f"JobSet still running after {timeout} s; logs "
                             f"in {self.log_dir}.")
        if poll is not None:
          poll(self)
        time.sleep(0.1)
    finally:
      self.kill_all()


def main() -> int:
  """Command line: run a rendered JobSet's pods as local processes."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("manifest", help="A rendered JobSet YAML file.")
  parser.add_argument("--shared", required=True,
                      help=f"Local directory standing in for {manifests.SHARED}.")
  parser.add_argument("--port", type=int, default=manifests.COORDINATOR_PORT)
  args = parser.parse_args()
  jobsets = [o for o in yaml.safe_load_all(Path(args.manifest).read_text())
             if o and o.get("kind") == "JobSet"]
  for jobset in jobsets:
    restarts = LocalJobSet(jobset, Path(args.shared),
                           lambda: args.port).run()
    print(f"{jobset['metadata']['name']}: succeeded after {restarts} restarts")
  return 0


if __name__ == "__main__":
  sys.exit(main())
