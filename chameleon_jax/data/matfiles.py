"""Masks stored in MATLAB .mat files (scipy.io), as some datasets ship them.

Road-crack and medical datasets often store ground truth as a MATLAB
variable, sometimes inside a struct (CrackForest: `groundTruth`, a 1x1
struct whose `Segmentation` field holds 1 for background and 2 for crack).
`load_mask(path, data, field)` returns that 2-D array; `field` is a dotted
path through variables, struct fields and cell indices ("groundTruth.
Segmentation", "gt.0.mask"); "" takes the file's only 2-D numeric variable.
Values are mapped to classes by the source's `value_map`. MATLAB v7.3 files
(HDF5) are refused with the way out named: scipy reads versions 4 to 7.2.
"""

from __future__ import annotations

import io
import os

import numpy as np
import scipy.io

from chameleon_jax.data.images import DecodeError

HDF5_HEADER = b"MATLAB 7.3 MAT-file"


def _variables(tree: dict) -> list[str]:
  return sorted(k for k in tree if not k.startswith("__"))


def _describe(value) -> str:
  if isinstance(value, dict):
    return f"struct with fields {_variables(value)}"
  if isinstance(value, (list, tuple)) or (
      isinstance(value, np.ndarray) and value.dtype == object):
    return f"cell/struct array of {len(value)}"
  if isinstance(value, np.ndarray):
    return f"{value.dtype} array {value.shape}"
  return type(value).__name__


def _walk(tree: dict, field: str, where: str):
  value = tree
  path = []
  for part in field.split("."):
    path.append(part)
    if isinstance(value, dict):
      if part not in value:
        raise DecodeError(
            f"{where}: field {'.'.join(path)!r} not found; "
            f"{'.'.join(path[:-1]) or 'the file'} has {_variables(value)}.")
      value = value[part]
    elif isinstance(value, (list, tuple, np.ndarray)) and part.isdigit() \
        and (not isinstance(value, np.ndarray) or value.dtype == object):
      if int(part) >= len(value):
        raise DecodeError(f"{where}: index {'.'.join(path)!r} out of range "
                          f"({len(value)} entries).")
      value = value[int(part)]
    else:
      raise DecodeError(f"{where}: cannot take {part!r} of "
                        f"{'.'.join(path[:-1])!r}, a {_describe(value)}.")
  return value


def load_mask(path: str | os.PathLike[str], data: bytes,
              field: str = "") -> np.ndarray:
  """The 2-D integer mask at `field` of the .mat file `path` (its bytes
  `data`), as an int64 array.

  Raises:
    DecodeError: not a readable .mat file, a v7.3 (HDF5) file, a field that
      is missing or not a 2-D array of whole numbers (the file and field are
      named, with what the file holds).

  Example:
    >>> buffer = io.BytesIO()
    >>> scipy.io.savemat(buffer, {"gt": {"Segmentation": np.ones((2, 3))}})
    >>> load_mask("a.mat", buffer.getvalue(), "gt.Segmentation").shape
    (2, 3)
  """
  if data.startswith(HDF5_HEADER):
    raise DecodeError(
        f"{path}: a MATLAB v7.3 (HDF5) file; save it with `save(..., "
        "'-v7')` in MATLAB, or convert the masks to PNG.")
  try:
    tree = scipy.io.loadmat(io.BytesIO(data), simplify_cells=True)
  except Exception as e:  # scipy raises many types on corrupt input.
    raise DecodeError(f"{path}: cannot read as a .mat file "
                      f"({type(e).__name__}: {e}).") from e
  if not field:
    candidates = [k for k in _variables(tree)
                  if isinstance(tree[k], np.ndarray) and tree[k].ndim == 2
                  and tree[k].dtype != object]
    if len(candidates) != 1:
      raise DecodeError(
          f"{path}: {len(candidates)} 2-D numeric variables "
          f"({candidates or _variables(tree)}); name the mask with the "
          "source's `mat_field` option (e.g. 'groundTruth.Segmentation').")
    field = candidates[0]
  where = f"{path} field {field!r}"
  value = _walk(tree, field, str(path))
  array = np.asarray(value)
  if array.dtype == object or array.ndim != 2 or not (
      np.issubdtype(array.dtype, np.number) or array.dtype == bool):
    raise DecodeError(f"{where}: a {_describe(value)}; expected a 2-D "
                      "numeric mask.")
  if array.dtype.kind == "f" and not np.all(np.isfinite(array) &
                                            (array == np.round(array))):
    raise DecodeError(f"{where}: values are not whole numbers; a mask holds "
                      "class values.")
  return array.astype(np.int64)
