"""Offline checks of rendered manifests (no cluster needed).

  python -m infra.validate DIR_OR_FILE...

Every YAML file passes yamllint (infra/yamllint.yaml); every object is
validated with kubernetes-validate's strict schemas (unknown fields are
errors) for the oldest and the newest supported Kubernetes version; JobSets
and PrometheusRules, which kubernetes-validate would pass with only a "no
schema" warning, are validated against infra/schemas/jobset-v1alpha2.json
and prometheusrule-v1.json, whose embedded Kubernetes types resolve to the
same Kubernetes version's strict schema. A resource with no
schema at all is an error, never a warning. Exit status 1 on any problem.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import referencing
import yaml
from kubernetes_validate import utils as kv_utils
from yamllint import config as yamllint_config
from yamllint import linter

# Oldest and newest Kubernetes minor versions the manifests are checked
# against (autoscaling/v2, policy/v1 and Indexed Jobs are GA in both).
SUPPORTED_KUBERNETES = ("1.30", "1.37")
HERE = Path(__file__).resolve().parent
JOBSET_SCHEMA = HERE / "schemas" / "jobset-v1alpha2.json"
# Custom resources and their vendored schemas (kubernetes-validate has none).
CUSTOM_SCHEMAS = {"JobSet": JOBSET_SCHEMA,
                  "PrometheusRule": HERE / "schemas" / "prometheusrule-v1.json"}
YAMLLINT_CONFIG = HERE / "yamllint.yaml"


def lint(path: Path) -> list[str]:
  """yamllint problems of one manifest file."""
  conf = yamllint_config.YamlLintConfig(file=str(YAMLLINT_CONFIG))
  return [f"{path}:{p.line}:{p.column}: yamllint {p.level}: {p.desc} "
          f"({p.rule})" for p in linter.run(path.read_text(), conf, str(path))]


def _definitions(version: str) -> referencing.Registry:
  directory = f"kubernetes-json-schema/v{version}.0-local-strict"
  defs = kv_utils.schema_contents(f"{directory}/_definitions.json", version)
  return referencing.Resource.from_contents(defs) @ referencing.Registry()


def validate_custom(obj: dict, version: str) -> list[str]:
  """Problems of a custom resource (a JobSet, a PrometheusRule) against
  its vendored schema."""
  schema = json.loads(CUSTOM_SCHEMAS[obj["kind"]].read_text())
  validator = jsonschema.Draft202012Validator(schema,
                                              registry=_definitions(version))
  return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
          for e in sorted(validator.iter_errors(obj), key=lambda e: e.path)]


def validate_object(obj: dict, version: str) -> list[str]:
  """Problems of one object for one Kubernetes version ([] = valid)."""
  if not isinstance(obj, dict) or "kind" not in obj or "apiVersion" not in obj:
    return ["not a Kubernetes object (no kind/apiVersion)"]
  if obj["kind"] in CUSTOM_SCHEMAS:
    return validate_custom(obj, version)
  try:
    kubernetes_validate.validate(obj, version, strict=True)
  except kubernetes_validate.ValidationError as e:
    path = ".".join(str(p) for p in e.absolute_path) or "<root>"
    return [f"{path}: {e.message}"]
  except (kubernetes_validate.SchemaNotFoundError,
          kubernetes_validate.InvalidSchemaError) as e:
    return [f"no schema: {e.message}"]
  return []


def validate_file(path: Path,
                  versions: tuple[str, ...] = SUPPORTED_KUBERNETES) -> list[str]:
  """Every problem of one rendered file: lint, Kubernetes schemas of the
  given versions (strict), JobSet schema.
  """
  problems = lint(path)
  for obj in yaml.safe_load_all(path.read_text()):
    if obj is None:
      continue
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    for version in versions:
      problems += [f"{path}: {name} (Kubernetes {version}): {p}"
                   for p in validate_object(obj, version)]
  return problems


def main(argv: list[str]) -> int:
  """`python -m infra.validate DIR`: exit 1 on any problem."""
  paths = []
  for arg in argv or ["."]:
    p = Path(arg)
    paths += sorted(p.rglob("*.yaml")) if p.is_dir() else [p]
  problems = [q for p in paths for q in validate_file(p)]
  for q in problems:
    print(q)
  print(f"{len(paths)} files, {len(problems)} problems "
        f"(Kubernetes {', '.join(SUPPORTED_KUBERNETES)}).")
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
