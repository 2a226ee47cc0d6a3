"""The TEST server's REST predict body: JSON text -> signature name and NumPy inputs.

Follows TF-Serving's REST API for the columnar format
(https://www.tensorflow.org/tfx/serving/api_rest):

    {"signature_name": "<name>", "inputs": <value>}
    {"signature_name": "<name>", "inputs": {"<input>": <value>, ...}}

A value is a scalar or a dense nested list (every list of one level has the
same length, every leaf is at the same depth); a string input's leaves are
JSON strings or {"b64": "<base64>"} objects (exactly that one key).

Whatever the body, `parse_predict_body` returns or raises `RequestError`
(the server answers 400 {"error": <its message>}): a body that is not a JSON
object, a signature_name that is not a string, nesting deeper than NumPy's
64 dimensions (or than Python's parser takes), ragged lists, leaves of the
wrong JSON type, numbers that do not fit the input's dtype and base64 that
does not decode each name what was wrong and where.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

# NumPy 2's NPY_MAXDIMS: an input cannot have more dimensions.
MAX_RANK = 64


class RequestError(ValueError):
  """The request body is not a valid predict request; the message says why."""


def _json_type(value: Any) -> str:
  """The JSON type of a parsed value, as TF-Serving names them."""
  if value is None:
    return "Null"
  if isinstance(value, bool):
    return "True" if value else "False"
  if isinstance(value, (int, float)):
    return "Number"
  return {str: "String", list: "Array", dict: "Object"}.get(type(value),
                                                            type(value).__name__)


def _short(value: Any, limit: int = 80) -> str:
  text = json.dumps(value)
  return text if len(text) <= limit else text[:limit] + "..."


def parse_json(body: bytes) -> dict:
  """The request body as a JSON object.

  Raises:
    RequestError: not UTF-8 JSON, nested too deeply for the parser, or not
      an object.
  """
  if not body:
    raise RequestError("JSON Parse error: The document is empty")
  try:
    parsed = json.loads(body)
  except RecursionError:
    raise RequestError("JSON Parse error: the document is nested too deeply "
                       "to parse; a request input has at most "
                       f"{MAX_RANK} dimensions") from None
  except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
    raise RequestError(f"JSON Parse error: {e}") from None
  if not isinstance(parsed, dict):
    raise RequestError(
        f"JSON Value: {_short(parsed)} Is not object: the body must be a JSON "
        'object such as {"inputs": ...}; got a JSON ' + _json_type(parsed))
  return parsed


def _dense_shape(value: Any, name: str) -> list[int]:
  """The shape the first element of each level gives (TF-Serving's rule)."""
  shape = []
  while isinstance(value, list):
    shape.append(len(value))
    if len(shape) > MAX_RANK:
      raise RequestError(
          f"Input {name!r} is nested more than {MAX_RANK} lists deep; an "
          f"input has at most {MAX_RANK} dimensions")
    if not value:
      break
    value = value[0]
  return shape


def _leaves(value: Any, shape: list[int], name: str) -> list[Any]:
  """The leaves of a dense nested list, in row-major order.

  Raises:
    RequestError: a list of another length than the first of its level
      (ragged), or a leaf or list at the wrong depth.
  """
  items = [value]
  for level, size in enumerate(shape):
    nested = []
    for item in items:
      if not isinstance(item, list):
        raise RequestError(
            f"Input {name!r}: JSON Value: {_short(item)} found at level "
            f"{level} of the nested lists, where a list of {size} was "
            f"expected: the input is ragged (shape {shape} from the first "
            "elements); every list of a level must have the same length")
      if len(item) != size:
        raise RequestError(
            f"Input {name!r}: Encountered list at unexpected size: "
            f"{len(item)} at level: {level} expected size: {size}: the "
            f"input is ragged (shape {shape} from the first elements); "
            "every list of a level must have the same length")
      nested.extend(item)
    items = nested
  for item in items:
    if isinstance(item, list):
      raise RequestError(
          f"Input {name!r}: Encountered list at unexpected level: "
          f"{len(shape)} expected < {len(shape)}: the input is ragged "
          f"(shape {shape} from the first elements)")
  return items


def _decode_string(leaf: Any, name: str) -> bytes:
  if isinstance(leaf, str):
    return leaf.encode("utf-8")
  if isinstance(leaf, dict):
    if set(leaf) != {"b64"} or not isinstance(leaf["b64"], str):
      raise RequestError(
          f"Input {name!r}: JSON Value: {_short(leaf)} not formatted "
          'correctly for base64 data: expected {"b64": "<base64 string>"}')
    try:
      return base64.b64decode(leaf["b64"], validate=True)
    except (binascii.Error, ValueError) as e:
      raise RequestError(
          f"Input {name!r}: Unable to base64 decode {_short(leaf)} ({e})"
      ) from None
  raise RequestError(
      f"Input {name!r}: JSON Value: {_short(leaf)} Type: {_json_type(leaf)} "
      'is not of expected type: string (a JSON string or {"b64": ...})')


def _type_error(leaf: Any, name: str, dtype: tf.dtypes.DType) -> RequestError:
  return RequestError(
      f"Input {name!r}: JSON Value: {_short(leaf)} Type: {_json_type(leaf)} "
      f"is not of expected type: {dtype.name}")


def to_array(value: Any, dtype: tf.dtypes.DType, name: str) -> np.ndarray:
  """One input's JSON value -> a NumPy array of the signature's dtype.

  Args:
    value: the parsed JSON value (scalar or dense nested lists).
    dtype: the signature input's dtype; numbers are parsed as it, as
      TF-Serving does (JSON has no dtypes).
    name: the input's name, for messages.

  Returns:
    The array: object dtype holding bytes for a string input.

  Raises:
    RequestError: ragged or too deep lists, a leaf of the wrong JSON type, a
      number that does not fit `dtype` (an integer out of range, a float for
      an integer input, a finite number beyond a float dtype's range), bad
      base64.
  """
  shape = _dense_shape(value, name)
  leaves = _leaves(value, shape, name)
  if dtype == tf.string:
    return np.array([_decode_string(leaf, name) for leaf in leaves],
                    dtype=object).reshape(shape)
  if dtype == tf.bool:
    allowed = (bool,)
  elif dtype.is_integer:
    allowed = (int,)
  elif dtype.is_floating:
    allowed = (int, float)
  else:
    raise RequestError(f"Input {name!r}: the test server does not convert "
                       f"JSON to {dtype.name}")
  # type(), not isinstance: a JSON true is no number here.
  bad_at = next((i for i, leaf in enumerate(leaves)
                 if type(leaf) not in allowed), None)
  if bad_at is not None:
    bad = leaves[bad_at]
    if dtype.is_integer and isinstance(bad, float):
      raise RequestError(
          f"Input {name!r}: JSON Value: {_short(bad)} is not of expected "
          f"type: {dtype.name}; expects {dtype.name} values (JSON integers), "
          "got floating point numbers")
    raise _type_error(bad, name, dtype)
  numpy_dtype = dtype.as_numpy_dtype
  if dtype.is_integer and leaves:
    info = np.iinfo(numpy_dtype)
    low, high = min(leaves), max(leaves)
    if low < info.min or high > info.max:
      raise RequestError(
          f"Input {name!r}: Input values do not fit the signature's dtype "
          f"{dtype.name}: {low if low < info.min else high} is outside "
          f"[{info.min}, {info.max}]")
  if dtype.is_floating:
    try:
      wide = np.array(leaves, dtype=np.float64)
    except OverflowError:
      raise RequestError(
          f"Input {name!r}: Cannot convert a JSON integer to {dtype.name} "
          "without loss of precision: it is beyond float64's range") from None
    with np.errstate(over="ignore"):
      array = wide.astype(numpy_dtype)
    overflow = np.isfinite(wide) & ~np.isfinite(array.astype(np.float64))
    if overflow.any():
      raise RequestError(
          f"Input {name!r}: Cannot convert JSON value: "
          f"{float(wide[overflow][0])!r} to {dtype.name} without loss of precision "
          f"(beyond its largest value {float(dtype.max)!r})")
    return array.reshape(shape)
  return np.array(leaves, dtype=numpy_dtype).reshape(shape)


def signature_name(body: Mapping[str, Any]) -> str:
  """The body's signature_name, "serving_default" when absent or empty.

  Raises:
    RequestError: signature_name is not a JSON string.
  """
  name = body.get("signature_name", "")
  if not isinstance(name, str):
    raise RequestError(
        f"JSON Value: {_short(name)} not formatted correctly. "
        "'signature_name' key must be a string value, got a JSON "
        + _json_type(name))
  return name or "serving_default"


def inputs(body: Mapping[str, Any],
           expected: Mapping[str, tf.dtypes.DType]) -> dict[str, np.ndarray]:
  """The body's "inputs", one array per input of the signature.

  Args:
    body: the parsed body (`parse_json`).
    expected: the signature's inputs: name -> dtype.

  Returns:
    name -> array; inputs the signature does not have are returned as
    float32 arrays (the caller names them as unexpected).

  Raises:
    RequestError: no "inputs" key (the row format "instances" is not
      served), a plain value for a signature of several inputs, or any
      input `to_array` refuses.
  """
  if "inputs" not in body:
    raise RequestError(
        'Missing \'inputs\' key: the test server accepts the columnar '
        '{"inputs": ...} format only')
  value = body["inputs"]
  if not isinstance(value, dict) or set(value) == {"b64"}:
    if len(expected) != 1:
      raise RequestError(
          "inputs is a plain value/list, but expecting an object as multiple "
          f"input tensors required as per the signature ({sorted(expected)})")
    value = {next(iter(expected)): value}
  return {key: to_array(item, expected.get(key, tf.float32), key)
          for key, item in value.items()}
