"""The `eval/<split>/results.json` document of `python -m medsr_jax.evaluate`: schema and provenance.

One document per evaluated model and split (schema `medsr_jax.eval.results`, version 1; the JSON
Schema is `results_schema.json` beside this file, described field by field in
docs/EVALUATION.md). It holds every number the evaluation computed, per slice, per subject and
pooled, at every scale, plus what is needed to trust and reproduce it:

  provenance.code_version         medsr_jax's version, and the git commit when run from a checkout
  provenance.config_sha256        sha256 of the run's config.json (canonical JSON: sorted keys, no
                                  spaces), or of the export's config.json without a run
  provenance.data                 the data source ('shards' or 'sample') and the sha256 of its
                                  manifest (data_prep's manifest.json; the sample's NIfTI files)
  protocol                        the test protocol (degradation, blur, border crop, scales)

Nothing in the document depends on the clock, so evaluating the same export on the same data
twice gives the same file (the seconds each scale took are printed, not stored).

`validate(document)` checks a document against the schema with a small JSON-Schema subset
(type, enum, const, required, properties, additionalProperties, items, minimum, pattern) and
returns the list of problems; `check(document)` raises ValueError on the first ones.
Run the checks with:
  .venv/bin/python -m pytest -q tests/test_evaluate_results.py
"""

from __future__ import annotations

import functools
import hashlib
import json
import pathlib
import re
import subprocess
from typing import Any, Mapping

import medsr_jax

SCHEMA_NAME = "medsr_jax.eval.results"
SCHEMA_VERSION = 1
SCHEMA_FILE = pathlib.Path(__file__).resolve().parent / "results_schema.json"
_REPO = pathlib.Path(medsr_jax.__file__).resolve().parents[1]


@functools.lru_cache(maxsize=1)
def schema() -> dict:
  """The JSON Schema of a results document."""
  return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def canonical_sha256(value: Any) -> str:
  """sha256 of `value` as canonical JSON (sorted keys, no spaces, UTF-8)."""
  text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(*paths: str | pathlib.Path) -> str:
  """sha256 of the files' bytes, one after another."""
  digest = hashlib.sha256()
  for path in paths:
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
  return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
  """'0.1.0' or, from a git checkout, '0.1.0+g<commit>' ('.dirty' with uncommitted changes)."""
  version = medsr_jax.__version__
  try:
    commit = subprocess.run(["git", "-C", str(_REPO), "rev-parse", "--short=12", "HEAD"],
                            capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(_REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return version
  return f"{version}+g{commit}{'.dirty' if dirty else ''}" if commit else version


def data_provenance(data_config: Any) -> dict[str, str]:
  """{'source', 'path', 'manifest_sha256'} of the data a run reads (`sources.source_from_config`)."""
  # pylint: disable=import-outside-toplevel
  from medsr_jax.data import manifest as manifest_lib
  from medsr_jax.data import sample
  path = str(data_config.get("path", "") or "")
  if path:
    return {"source": "shards", "path": str(pathlib.Path(path).resolve()),
            "manifest_sha256": file_sha256(pathlib.Path(path) / manifest_lib.MANIFEST)}
  return {"source": "sample", "path": str(sample.SAMPLE_DIR),
          "manifest_sha256": file_sha256(sample.SAMPLE_DIR / sample.T1_FILE,
                                         sample.SAMPLE_DIR / sample.TISSUE_FILE)}


def provenance(*, run_config: Mapping[str, Any] | None, export_config: Mapping[str, Any],
               data_config: Any) -> dict[str, Any]:
  """The document's 'provenance' section."""
  source = "run" if run_config is not None else "export"
  return {"code_version": code_version(),
          "config_sha256": canonical_sha256(run_config if run_config is not None
                                            else export_config),
          "config_source": source,
          "data": data_provenance(data_config)}


# ----------------------------------------------------------------------------------------------
# Validation: the subset of JSON Schema that results_schema.json uses.

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is_type(value: Any, name: str) -> bool:
  if name in ("number", "integer"):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      return False
    return name == "number" or float(value).is_integer()
  return isinstance(value, _TYPES[name])


def _validate(value: Any, node: Mapping[str, Any], where: str, problems: list[str]) -> None:
  kinds = node.get("type")
  if kinds is not None:
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if not any(_is_type(value, k) for k in kinds):
      problems.append(f"{where}: expected {' or '.join(kinds)}, got {type(value).__name__}")
      return
  if "const" in node and value != node["const"]:
    problems.append(f"{where}: expected {node['const']!r}, got {value!r}")
  if "enum" in node and value not in node["enum"]:
    problems.append(f"{where}: {value!r} is not one of {node['enum']}")
  if "minimum" in node and _is_type(value, "number") and value < node["minimum"]:
    problems.append(f"{where}: {value} is below {node['minimum']}")
  if "pattern" in node and isinstance(value, str) and not re.search(node["pattern"], value):
    problems.append(f"{where}: {value!r} does not match {node['pattern']}")
  if isinstance(value, dict):
    for key in node.get("required", ()):
      if key not in value:
        problems.append(f"{where}: missing {key!r}")
    properties = node.get("properties", {})
    extra = node.get("additionalProperties", True)
    for key, item in value.items():
      if key in properties:
        _validate(item, properties[key], f"{where}.{key}", problems)
      elif extra is False:
        problems.append(f"{where}: unexpected key {key!r}")
      elif isinstance(extra, dict):
        _validate(item, extra, f"{where}.{key}", problems)
  if isinstance(value, list) and "items" in node:
    for i, item in enumerate(value):
      _validate(item, node["items"], f"{where}[{i}]", problems)


def _resolve(node: Any, definitions: Mapping[str, Any]) -> Any:
  """The schema with every {'$ref': '#/definitions/x'} replaced by its definition."""
  if isinstance(node, dict):
    if "$ref" in node:
      return _resolve(definitions[node["$ref"].rsplit("/", 1)[-1]], definitions)
    return {k: _resolve(v, definitions) for k, v in node.items() if k != "definitions"}
  if isinstance(node, list):
    return [_resolve(v, definitions) for v in node]
  return node


def validate(document: Any, against: Mapping[str, Any] | None = None) -> list[str]:
  """Problems of `document` against the results schema (or `against`); [] when it is valid."""
  node = schema() if against is None else against
  problems: list[str] = []
  _validate(document, _resolve(node, node.get("definitions", {})), "$", problems)
  return problems


def check(document: Any) -> None:
  """ValueError naming the first problems when `document` is not a valid results document."""
  problems = validate(document)
  if problems:
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    raise ValueError(f"invalid {SCHEMA_NAME} document: {'; '.join(problems[:3])}{more}")
