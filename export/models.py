"""The local server's model manager: which versions are served, loaded how.

Reads `<base>/models.config` (the same ModelServerConfig file the official
server gets; written by publish.py) when present, else serves the latest
version of every model directory under the base path. `refresh()` loads new
versions and unloads dropped ones; the server calls it every
`poll_seconds`, so newly published versions appear without a restart.
Version states follow TF Serving: LOADING -> AVAILABLE -> (UNLOADING) -> END.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

import grpc
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_status_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

State = get_model_status_pb2.ModelVersionStatus.State


class ServingError(Exception):
  """An error with the gRPC status code TF Serving would return."""

  MAX_MESSAGE = 2000  # gRPC trailers are small; XLA errors dump modules.

  def __init__(self, code: grpc.StatusCode, message: str):
    if len(message) > self.MAX_MESSAGE:
      message = message[:self.MAX_MESSAGE] + " ... (truncated)"
    super().__init__(message)
    self.code, self.message = code, message


@dataclasses.dataclass
class Version:
  """One version of a served model: its path, TF Serving's ModelVersionStatus
  state, the loaded model and its signatures.
  """
  version: int
  path: Path
  state: int = State.START
  error: str = ""
  model: object | None = None
  signature_defs: dict = dataclasses.field(default_factory=dict)
  warmup: bool = True

  def load(self) -> None:
    self.state = State.LOADING
    try:
      proto = saved_model_pb2.SavedModel()
      proto.ParseFromString((self.path / "saved_model.pb").read_bytes())
      self.signature_defs = dict(proto.meta_graphs[0].signature_def)
      self.model = tf.saved_model.load(str(self.path))
      if self.warmup:
        self.replay_warmup()
      self.state = State.AVAILABLE
    except Exception as e:  # A broken version must not take the server down.
      self.state, self.error = State.END, f"{type(e).__name__}: {e}"
      logging.error("cannot load %s: %s", self.path, self.error)

  def replay_warmup(self) -> int:
    """Runs assets.extra/tf_serving_warmup_requests (as --enable_model_warmup
    does), so the first real request finds its shapes compiled."""
    path = self.path / "assets.extra" / "tf_serving_warmup_requests"
    if not path.is_file():
      return 0
    count = 0
    for record in tf.data.TFRecordDataset(str(path)):
      log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
      request = log.predict_log.request
      function = self.model.signatures[
          request.model_spec.signature_name or "serving_default"]
      function(**{k: tf.constant(tf.make_ndarray(v))
                  for k, v in request.inputs.items()})
      count += 1
    logging.info("%s: replayed %d warmup requests", self.path, count)
    return count

  def signature(self, name: str):
    if self.model is None or name not in self.model.signatures:
      raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                         f"Serving signature key \"{name}\" not found.")
    return self.model.signatures[name]


@dataclasses.dataclass
class Model:
  """A served model: its base path, loaded versions and version labels."""
  name: str
  base_path: Path
  versions: dict[int, Version] = dataclasses.field(default_factory=dict)
  labels: dict[str, int] = dataclasses.field(default_factory=dict)


def _numeric_versions(path: Path) -> list[int]:
  return sorted(int(p.name) for p in path.iterdir()
                if p.is_dir() and p.name.isdigit()) if path.is_dir() else []


class ModelManager:
  """Thread-safe view of the served models."""

  def __init__(self, base_path: str | Path, warmup: bool = True):
    self.base_path = Path(base_path)
    self.warmup = warmup
    self._lock = threading.Lock()
    self._models: dict[str, Model] = {}

  def _wanted(self) -> dict[str, tuple[Path, list[int], dict[str, int]]]:
    config_file = self.base_path / "models.config"
    wanted = {}
    if config_file.is_file():
      config = text_format.Parse(config_file.read_text(),
                                 model_server_config_pb2.ModelServerConfig())
      for entry in config.model_config_list.config:
        path = Path(entry.base_path)
        available = _numeric_versions(path)
        policy = entry.model_version_policy
        if policy.HasField("specific"):
          chosen = [v for v in policy.specific.versions if v in available]
        elif policy.HasField("all"):
          chosen = available
        else:
          n = policy.latest.num_versions if policy.HasField("latest") else 1
          chosen = available[-max(1, n):]
        wanted[entry.name] = (path, chosen, dict(entry.version_labels))
    else:
      for path in sorted(p for p in self.base_path.iterdir() if p.is_dir()):
        available = _numeric_versions(path)
        if available:
          wanted[path.name] = (path, available[-1:], {})
    return wanted

  def refresh(self) -> None:
    """Loads versions the config now wants; unloads those it dropped."""
    wanted = self._wanted()
    for name, (path, chosen, labels) in wanted.items():
      with self._lock:
        model = self._models.setdefault(name, Model(name, path))
        new = [v for v in chosen if v not in model.versions
               or model.versions[v].state == State.END]
      for number in new:  # Load outside the lock: it takes seconds.
        version = Version(number, path / str(number), warmup=self.warmup)
        with self._lock:
          model.versions[number] = version
        version.load()
      with self._lock:
        for number, version in model.versions.items():
          if number not in chosen and version.state == State.AVAILABLE:
            version.state, version.model = State.END, None
        model.labels = labels
    with self._lock:
      for name in set(self._models) - set(wanted):
        for version in self._models[name].versions.values():
          version.state, version.model = State.END, None

  def resolve(self, name: str, version: int | None = None,
              label: str = "") -> Version:
    """The version a ModelSpec names (latest available by default)."""
    with self._lock:
      model = self._models.get(name)
      if model is None:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"Servable not found for request: Latest({name})")
      if label:
        if label not in model.labels:
          raise ServingError(grpc.StatusCode.NOT_FOUND,
                             f"Unrecognized servable version label: {label}")
        version = model.labels[label]
      if version is None:
        ready = [v for v in model.versions.values()
                 if v.state == State.AVAILABLE]
        if not ready:
          raise ServingError(grpc.StatusCode.NOT_FOUND,
                             f"Servable not found for request: Latest({name})")
        return max(ready, key=lambda v: v.version)
      found = model.versions.get(version)
      if found is None or found.state != State.AVAILABLE:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"Servable not found for request: "
                           f"Specific({name}, {version})")
      return found

  def status(self, name: str, version: int | None = None) -> list[Version]:
    with self._lock:
      model = self._models.get(name)
      if model is None:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"Could not find any versions of model {name}")
      versions = sorted(model.versions.values(), key=lambda v: v.version)
      if version is not None:
        versions = [v for v in versions if v.version == version]
        if not versions:
          raise ServingError(grpc.StatusCode.NOT_FOUND,
                             f"Could not find version {version} of model "
                             f"{name}")
      return versions
