"""TF-Serving's request protos and tensor conversion, without TensorFlow's runtime.

tensorflow-serving-api's modules (predict_pb2, ...) import TensorFlow's own
protos (tensorflow.core.framework.tensor_pb2, ...), plain protobuf modules.
Importing them the ordinary way runs `tensorflow/__init__.py` first, which
loads all of TensorFlow (seconds, hundreds of MB) for nothing a client
uses. `load()` imports them under their own names with a placeholder parent
package `tensorflow` (the real package's folder, none of its code), then
removes the placeholder: a later `import tensorflow` loads the real package
and finds these proto modules already imported (the same ones it would
import). Where TensorFlow is already imported they are imported plainly.

`to_tensor_proto` / `to_ndarray` convert NumPy arrays to and from
TensorProto for the dtypes a keras-reid model exchanges (and the other
numeric ones), as tf.make_tensor_proto / tf.make_ndarray do.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

import numpy as np

_TF = "tensorflow"
# What the clients use; their own imports bring TensorFlow's protos.
MODULES = ("tensorflow_serving.apis.predict_pb2",
           "tensorflow_serving.apis.get_model_metadata_pb2",
           "tensorflow_serving.apis.prediction_service_pb2_grpc",
           "tensorflow.core.framework.tensor_pb2",
           "tensorflow.core.framework.types_pb2")


def load() -> dict[str, types.ModuleType]:
  """Imports MODULES without running TensorFlow's package code.

  Returns:
    {short name ("predict_pb2", ...): module}.

  Raises:
    ImportError: tensorflow-serving-api (or the tensorflow package whose
      protos it uses) is not installed.
  """
  placeholder = None
  if _TF not in sys.modules:
    spec = importlib.util.find_spec(_TF)  # finds; runs no package code
    if spec is None or not spec.submodule_search_locations:
      raise ImportError(
          "the TF-Serving client needs the tensorflow-serving-api package and "
          "the tensorflow package's protos: pip install -r requirements.txt")
    placeholder = types.ModuleType(_TF, "placeholder: protos only")
    placeholder.__path__ = list(spec.submodule_search_locations)
    placeholder.__spec__ = None
    sys.modules[_TF] = placeholder
  try:
    return {name.rsplit(".", 1)[1]: importlib.import_module(name)
            for name in MODULES}
  finally:
    if placeholder is not None and sys.modules.get(_TF) is placeholder:
      del sys.modules[_TF]


_PROTOS = load()
tensor_pb2 = _PROTOS["tensor_pb2"]
types_pb2 = _PROTOS["types_pb2"]
predict_pb2 = _PROTOS["predict_pb2"]
get_model_metadata_pb2 = _PROTOS["get_model_metadata_pb2"]
prediction_service_pb2_grpc = _PROTOS["prediction_service_pb2_grpc"]

# DataType -> (NumPy dtype, TensorProto field of its values, TF's name).
_DTYPES = {
    types_pb2.DT_FLOAT: (np.float32, "float_val", "float32"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val", "float64"),
    types_pb2.DT_HALF: (np.float16, "half_val", "float16"),
    types_pb2.DT_INT8: (np.int8, "int_val", "int8"),
    types_pb2.DT_INT16: (np.int16, "int_val", "int16"),
    types_pb2.DT_INT32: (np.int32, "int_val", "int32"),
    types_pb2.DT_INT64: (np.int64, "int64_val", "int64"),
    types_pb2.DT_UINT8: (np.uint8, "int_val", "uint8"),
    types_pb2.DT_UINT16: (np.uint16, "int_val", "uint16"),
    types_pb2.DT_UINT32: (np.uint32, "uint32_val", "uint32"),
    types_pb2.DT_UINT64: (np.uint64, "uint64_val", "uint64"),
    types_pb2.DT_BOOL: (np.bool_, "bool_val", "bool"),
    types_pb2.DT_STRING: (object, "string_val", "string"),
}
_BY_NUMPY = {np.dtype(v[0]): k for k, v in _DTYPES.items() if v[0] is not object}


def dtype_name(dtype: int) -> str:
  """A DataType enum value -> TensorFlow's name ("float32", "string", ...)."""
  if dtype in _DTYPES:
    return _DTYPES[dtype][2]
  return types_pb2.DataType.Name(dtype).removeprefix("DT_").lower()


def to_tensor_proto(value: Any) -> Any:
  """A NumPy array -> TensorProto (tf.make_tensor_proto's encoding).

  Numbers go as little-endian `tensor_content`; an object, bytes or str
  array (encoded image files) as DT_STRING `string_val` (str as UTF-8).

  Raises:
    TypeError: a dtype TensorProto has no NumPy counterpart for.
  """
  value = np.asarray(value)
  proto = tensor_pb2.TensorProto()
  for size in value.shape:
    proto.tensor_shape.dim.add(size=int(size))
  if value.dtype == object or value.dtype.kind in "SU":
    proto.dtype = types_pb2.DT_STRING
    proto.string_val.extend(
        v.encode() if isinstance(v, str) else bytes(v)
        for v in value.reshape(-1).tolist())
    return proto
  if value.dtype not in _BY_NUMPY:
    raise TypeError(f"cannot send a {value.dtype} array to TF-Serving; "
                    f"expected one of {sorted(str(d) for d in _BY_NUMPY)}.")
  proto.dtype = _BY_NUMPY[value.dtype]
  proto.tensor_content = np.ascontiguousarray(
      value, value.dtype.newbyteorder("<")).tobytes()
  return proto


def to_ndarray(proto: Any) -> np.ndarray:
  """TensorProto -> NumPy array (tf.make_ndarray's decoding).

  Values come from `tensor_content`, or from the typed field, where fewer
  values than elements mean the last one repeats (TensorFlow's rule).

  Raises:
    TypeError: a dtype without a NumPy counterpart here.
  """
  if proto.dtype not in _DTYPES:
    raise TypeError(f"cannot read a TensorProto of dtype "
                    f"{dtype_name(proto.dtype)}; expected one of "
                    f"{sorted(v[2] for v in _DTYPES.values())}.")
  np_dtype, field, _ = _DTYPES[proto.dtype]
  shape = [d.size for d in proto.tensor_shape.dim]
  size = int(np.prod(shape, dtype=np.int64))
  if proto.tensor_content and np_dtype is not object:
    return np.frombuffer(proto.tensor_content,
                         np.dtype(np_dtype).newbyteorder("<")).astype(
                             np_dtype).reshape(shape)
  values = list(getattr(proto, field))
  if np_dtype is object:
    out = np.empty(len(values), object)
    out[:] = values
  elif proto.dtype == types_pb2.DT_HALF:
    # half_val holds the float16 bit patterns as ints.
    out = np.asarray(values, np.uint16).view(np.float16)
  else:
    out = np.asarray(values, np_dtype)
  if out.size < size:
    fill = out[-1] if out.size else np.zeros((), out.dtype)[()]
    out = np.concatenate([out, np.full(size - out.size, fill, out.dtype)])
  return out[:size].reshape(shape)
