"""TF Serving layout: versions, warmup, metadata, labels and server files.

  <model_base_path>/
    <NAME>/<version>/          saved_model.pb, variables/, assets.extra/
        assets.extra/tf_serving_warmup_requests   PredictionLog TFRecords
        assets.extra/export_metadata.json         versions, platforms,
                                                  hashes, input contract
        assets.extra/evaluation/, model_card/     evidence, the card
    <NAME>/labels.json         version labels (stable, canary, ...)
    <NAME>/blessings.jsonl     the ledger: gate verdicts and label moves
    models.config              model_config_file (every model, its version
                               policy and labels), from the official proto
    models.container.config    the same with the paths the server container
                               sees (base path mounted at /models)
    batching_parameters.txt    --batching_parameters_file
    monitoring.config          --monitoring_config_file (Prometheus)
    serving_command.txt        the production command line for the official
                               image

A version is copied to a hidden temporary directory inside NAME/ and renamed
to its number only when complete (the server ignores non-numeric names and
never sees half a model); an existing version is never overwritten. A new
version is labelled `canary`; `stable` moves only by `promote`: to a version
the regression gate blessed (the ledger holds a blessing of exactly its
parameters on its dataset), back to a version that was stable before
(rollback), or with `force_reason` (recorded); and only when the version's
model card (assets.extra/model_card/) carries every field a person must
write. Every move is appended to the ledger (chameleon_jax/governance/) and
rendered into the card.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from export.savedmodel import INPUT_DTYPES
from export import server_flags

from chameleon_jax import atomic
from chameleon_jax.governance import card_render, ledger, model_card
from chameleon_jax.governance import versions as layout
from chameleon_jax.governance.versions import published as versions

WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving reads at most this many.


class PromotionError(ValueError):
  """`stable` cannot move to that version (names the version and why)."""



def warmup_requests(name: str, contract, batch_sizes) -> list:
  """One PredictRequest per bucket (or model input size) and batch size, for
  serving_default and for `encoded` (each signature compiles its own
  programs)."""
  dtype, top = INPUT_DTYPES[contract.input_dtype]
  sizes = (contract.buckets if contract.task == "segmentation"
           else [contract.image_size])
  out = []
  for signature in ("serving_default", "encoded"):
    for batch in batch_sizes:
      for h, w in sizes:
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
            name=name, signature_name=signature))
        images = np.full((batch, h, w, contract.channels), 0.5 * top,
                         dtype=dtype.as_numpy_dtype)
        if signature == "encoded":
          png = tf.io.encode_png(images[0].astype(np.uint8)).numpy()
          request.inputs["images"].CopyFrom(tf.make_tensor_proto(
              [png] * batch, dtype=tf.string))
        else:
          request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
        out.append(request)
  if len(out) > MAX_WARMUP_RECORDS:
    raise ValueError(f"{len(out)} warmup requests; TF Serving reads at most "
                     f"{MAX_WARMUP_RECORDS}.")
  return out


def write_warmup(path: Path, requests: list) -> None:
  """Writes TF Serving's warmup file (assets.extra/tf_serving_warmup_
  requests): PredictionLog records of `requests`, as TFRecords.
  """
  with tf.io.TFRecordWriter(str(path)) as writer:
    for request in requests:
      log = prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request))
      writer.write(log.SerializeToString())


def publish(saved_model: Path, model_base_path: Path, name: str,
            requests: list, metadata: dict, label: str = "canary") -> int:
  """Copies a verified SavedModel in as the next version; returns it."""
  model_dir = Path(model_base_path) / name
  model_dir.mkdir(parents=True, exist_ok=True)
  _remove_stale(model_dir)
  version = (versions(model_dir) or [0])[-1] + 1
  tmp = model_dir / f".tmp-{version}-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  shutil.copytree(saved_model, tmp)
  extra = tmp / "assets.extra"
  extra.mkdir(exist_ok=True)
  write_warmup(extra / WARMUP_FILE, requests)
  (extra / "export_metadata.json").write_text(
      json.dumps({**metadata, "version": version}, indent=1, sort_keys=True)
      + "\n")
  final = model_dir / str(version)
  if final.exists():  # Another publisher won the race: never overwrite.
    shutil.rmtree(tmp)
    raise FileExistsError(f"{final} appeared while publishing; retry.")
  os.rename(tmp, final)
  labels = read_labels(model_dir)
  if label:
    if label == "stable":
      raise PromotionError("a new version cannot be published as 'stable':"
                           " publish it as 'canary', gate it, then promote "
                           "it.")
    labels[label] = version
  write_labels(model_dir, labels)
  write_server_files(Path(model_base_path))
  return version


def _remove_stale(model_dir: Path) -> None:
  """Deletes temporary versions left by publishers that died mid-copy."""
  for tmp in model_dir.glob(".tmp-*-*"):
    pid = int(tmp.name.rsplit("-", 1)[1])
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      shutil.rmtree(tmp, ignore_errors=True)
    except PermissionError:  # Alive, another user's.
      pass


read_labels = layout.read_labels  # {label: version}; {} if none.


def write_labels(model_dir: Path, labels: dict[str, int]) -> None:
  """Writes {label: version} atomically.

  Raises:
    ValueError: a label points to a version that does not exist.
  """
  missing = {k: v for k, v in labels.items() if v not in versions(model_dir)}
  if missing:
    raise ValueError(f"labels {missing} point to versions that do not exist "
                     f"in {model_dir} ({versions(model_dir)}).")
  atomic.write_json(model_dir / layout.LABELS, labels, sort_keys=True)


def set_label(model_base_path: Path, name: str, label: str,
              version: int) -> None:
  """Points a label other than `stable` at `version` and rewrites
  models.config, which the server polls (`stable`: `promote`).

  Raises:
    PromotionError: label is "stable".
  """
  if label == "stable":
    raise PromotionError("'stable' moves only by promote() (python -m "
                         "export.publish --label=stable ...): it needs a "
                         "blessing, a rollback or a recorded reason.")
  model_dir = Path(model_base_path) / name
  labels = read_labels(model_dir)
  labels[label] = version
  write_labels(model_dir, labels)
  write_server_files(Path(model_base_path))


def promote(model_base_path: Path, name: str, version: int,
            force_reason: str = "") -> dict:
  """Points `stable` at `version` and appends the move to the ledger.

  Allowed when the version was stable before ("rollback"), when the ledger
  holds a gate blessing of exactly this version's parameters on its
  dataset ("promote"), or with a person's `force_reason` ("force").

  Returns:
    The ledger record written ({"kind": "unchanged", ...} and nothing
    written when `version` is already stable).

  Raises:
    PromotionError: none of these holds (the version, its digest and what
      the ledger lacks are named).
    ledger.LedgerError: the ledger has a corrupt line (nothing moves).
  """
  base = Path(model_base_path)
  model_dir = layout.model_dir(base, name)
  records = ledger.read(model_dir / ledger.LEDGER)
  if version not in versions(model_dir):
    raise PromotionError(f"version {version} of {name!r} does not exist in "
                         f"{model_dir} ({versions(model_dir)}).")
  meta = layout.metadata(base, name, version)
  digest = meta.get("checkpoint", {}).get("params_sha256")
  dataset = meta.get("dataset_hash")
  previous = read_labels(model_dir).get("stable")
  record = {"version": version, "previous": previous,
            "params_sha256": digest, "dataset_hash": dataset}
  if previous == version:
    return {"kind": "unchanged", **record}  # Nothing moves, nothing logged.
  card_dir = model_dir / str(version) / layout.CARD
  try:
    missing = model_card.missing_human(
        model_card.read(card_dir / "model_card.json"))
  except model_card.CardError as e:
    raise PromotionError(f"version {version} of {name!r}: {e}") from e
  if missing:
    raise PromotionError(
        f"version {version} of {name!r} is not signed: its model card "
        f"({card_dir}) lacks {missing}; write them in the YAML named by "
        "card.human and run --mode=card (training and export still run; "
        "stable does not move).")
  blessing = ledger.blessing(records, digest, dataset) if digest else None
  was_stable = any(r["kind"] in ("promote", "force", "rollback") and
                   r.get("version") == version for r in records)
  if was_stable:
    kind = "rollback"
  elif blessing:
    kind = "promote"
    record["blessing_time"] = blessing["time"]
  elif force_reason.strip():
    kind = "force"
    record["reason"] = force_reason.strip()
  else:
    raise PromotionError(
        f"version {version} of {name!r} (parameters {digest}, dataset "
        f"{dataset}) has no blessing in {model_dir / ledger.LEDGER} and was "
        "never stable: run --mode=gate on its workdir, or promote with "
        "--force --reason=... (recorded).")
  # The record first: a move is never made without one (a record whose
  # move was interrupted shows as a record with stable unchanged).
  entry = ledger.append(model_dir / ledger.LEDGER, kind, record)
  labels = read_labels(model_dir)
  labels["stable"] = version
  write_labels(model_dir, labels)
  write_server_files(base)
  card_render.refresh(card_dir, ledger.read(model_dir / ledger.LEDGER))
  return entry


def model_server_config(model_base_path: Path,
                        container_base_path: str | None = None):
  """The ModelServerConfig for every model under the base path.

  Served versions are the labelled ones (so stable and canary are both
  loaded); `container_base_path` replaces the local path in base_path when
  the server mounts the directory elsewhere (e.g. /models).
  """
  config = model_server_config_pb2.ModelServerConfig()
  for model_dir in sorted(p for p in Path(model_base_path).iterdir()
                          if p.is_dir() and versions(p)):
    labels = read_labels(model_dir)
    served = sorted(set(labels.values())) or versions(model_dir)[-1:]
    entry = config.model_config_list.config.add()
    entry.name = model_dir.name
    entry.base_path = (f"{container_base_path.rstrip('/')}/{model_dir.name}"
                       if container_base_path else str(model_dir.resolve()))
    entry.model_platform = "tensorflow"
    entry.model_version_policy.specific.versions.extend(served)
    for label, version in sorted(labels.items()):
      entry.version_labels[label] = version
  return config


def write_server_files(model_base_path: Path,
                       container_base_path: str = "/models") -> None:
  """models.config (local paths), models.container.config (container
  paths), batching, monitoring and the command lines, written atomically."""
  base = Path(model_base_path)
  files = {
      "models.config": text_format.MessageToString(
          model_server_config(base)),
      server_flags.MODEL_CONFIG: text_format.MessageToString(
          model_server_config(base, container_base_path)),
      server_flags.BATCHING_FILE: server_flags.BATCHING_PARAMETERS,
      server_flags.MONITORING_FILE: server_flags.MONITORING_CONFIG,
      "serving_command.txt": "\n".join(
          [f"# {device}: " + " ".join(
              server_flags.serving_command(container_base_path, device))
           for device in ("gpu", "cpu")]
          + [f"# docker {device}: " + " ".join(server_flags.docker_command(
              str(base.resolve()), tf.__version__, device))
             for device in ("gpu", "cpu")]) + "\n",
  }
  for name, text in files.items():
    atomic.write_text(base / name, text)


def main(argv: list[str] | None = None) -> int:
  """`python -m export.publish --model_base_path=DIR --model=NAME
  --label=stable --version=N [--force --reason=TEXT]`: promote a blessed
  canary or roll back (stable), or move another label. Exit status 1, with
  the reason, when stable cannot move."""
  import argparse
  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument("--model_base_path", required=True)
  parser.add_argument("--model", required=True)
  parser.add_argument("--label", required=True)
  parser.add_argument("--version", type=int, required=True)
  parser.add_argument("--force", action="store_true",
                      help="stable without a blessing; needs --reason.")
  parser.add_argument("--reason", default="")
  args = parser.parse_args(argv)
  base = Path(args.model_base_path)
  if args.force and not args.reason.strip():
    parser.error("--force needs --reason=TEXT (it is recorded).")
  try:
    if args.label == "stable":
      print(json.dumps(promote(base, args.model, args.version,
                               args.reason if args.force else "")))
    else:
      set_label(base, args.model, args.label, args.version)
  except (PromotionError, ledger.LedgerError) as e:
    print(f"publish: {e}")
    return 1
  print(json.dumps(read_labels(base / args.model)))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
