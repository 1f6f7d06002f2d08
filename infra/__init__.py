"""Cluster manifests rendered from an experiment config (`--mode=render`).

  targets.py    what differs per target (GKE GPU pools, GKE TPU pools, a plain
                CPU cluster): resources, node selectors, tolerations, storage
  manifests.py  the Kubernetes objects: the training JobSet (also used for
                ingest / evaluate / export steps and sweeps), TF Serving's
                Deployment, ConfigMap, Service, PodDisruptionBudget and HPA
  render.py     `--mode=render`: writes them as YAML under <workdir>/render/
  validate.py   offline checks: yamllint, kubernetes-validate --strict for
                each supported Kubernetes version, the JobSet schema
  podenv.py     a rendered JobSet's pods reproduced as local processes
                (their environment, the coordinator on 127.0.0.1, restarts
                as the JobSet would restart them)

Nothing here imports JAX or TensorFlow: rendering is text.
"""
