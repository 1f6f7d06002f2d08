"""The model server's files and command line, without TensorFlow.

Shared by the exporter (export/publish.py writes the files next to the
models) and the Kubernetes renderer (infra/manifests.py mounts the same files
from ConfigMaps), so the command line exists once.
"""

from __future__ import annotations

# Files written by publish.write_server_files next to the models. The
# container variant of the model config names paths as the server sees them.
MODEL_CONFIG = "models.container.config"
BATCHING_FILE = "batching_parameters.txt"
MONITORING_FILE = "monitoring.config"
SERVER_FILES = (MODEL_CONFIG, BATCHING_FILE, MONITORING_FILE)

GRPC_PORT = 8500
REST_PORT = 8501
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"

# Server-side batching: a request of more than MAX_BATCH_SIZE examples is
# refused, and every batch is padded to the next allowed size, so the server
# runs (and warmup compiles) one program per allowed size and bucket. Powers
# of two: at most half a batch is padding (8 clients: 65 against 52
# requests/s with 1, 4, 16; benchmarks/RESULTS.md, "Serving under load").
MAX_BATCH_SIZE = 16
ALLOWED_BATCH_SIZES = (1, 2, 4, 8, MAX_BATCH_SIZE)
BATCH_TIMEOUT_MICROS = 2000
BATCHING_PARAMETERS = f"""\
max_batch_size {{ value: {MAX_BATCH_SIZE} }}
batch_timeout_micros {{ value: {BATCH_TIMEOUT_MICROS} }}
max_enqueued_batches {{ value: 100 }}
num_batch_threads {{ value: 4 }}
""" + "".join(f"allowed_batch_sizes: {size}\n"
              for size in ALLOWED_BATCH_SIZES) + """\
pad_variable_length_inputs: false
"""


def allowed_batch_sizes(max_batch_size: int) -> tuple[int, ...]:
  """ALLOWED_BATCH_SIZES below `max_batch_size`, then `max_batch_size`
  (TF Serving requires the last allowed size to equal the maximum)."""
  return tuple(s for s in ALLOWED_BATCH_SIZES if s < max_batch_size) + (
      max_batch_size,)

MONITORING_CONFIG = f"""\
prometheus_config {{
  enable: true
  path: "{PROMETHEUS_PATH}"
}}
"""


def serving_command(container_base_path: str = "/models", device: str = "gpu",
                    config_dir: str | None = None) -> list[str]:
  """The official image's command line for this layout.

  `config_dir` is where the server files are mounted (default: next to the
  models); a jax2tf model needs XLA enabled on its device ("gpu" or "cpu"),
  or TF Serving refuses it with "XLA compilation disabled".
  """
  if device not in ("gpu", "cpu"):
    raise ValueError(f"device {device!r}; expected gpu or cpu.")
  xla = f"--xla_{device}_compilation_enabled=true"
  conf = (config_dir or container_base_path).rstrip("/")
  return ["tensorflow_model_server", f"--port={GRPC_PORT}",
          f"--rest_api_port={REST_PORT}",
          f"--model_config_file={conf}/{MODEL_CONFIG}",
          "--model_config_file_poll_wait_seconds=60",
          "--enable_model_warmup=true", "--enable_batching=true",
          f"--batching_parameters_file={conf}/{BATCHING_FILE}",
          f"--monitoring_config_file={conf}/{MONITORING_FILE}", xla]


def docker_command(model_base_path: str, image_version: str,
                   device: str = "cpu") -> list[str]:
  """`docker run` of the official image serving `model_base_path` (mounted
  read-only at /models) with `serving_command`'s flags, the image's own
  entrypoint replaced so that nothing but these flags applies."""
  suffix = "-gpu" if device == "gpu" else ""
  command = serving_command("/models", device)
  return (["docker", "run", "--rm", "-p", f"{GRPC_PORT}:{GRPC_PORT}",
           "-p", f"{REST_PORT}:{REST_PORT}"]
          + (["--gpus", "all"] if device == "gpu" else [])
          + ["-v", f"{model_base_path}:/models:ro",
             "--entrypoint", command[0],
             f"tensorflow/serving:{image_version}{suffix}"] + command[1:])
