"""The only format in which data leaves a learner's kernel: strict, tagged JSON.

The kernel *encodes* (:func:`encode`); the grader *decodes* (:func:`decode`)
and never unpickles anything that came from a kernel. A value is one of:

- JSON ``null``/``true``/``false``/numbers/strings for ``None``, ``bool``,
  ``int``, ``float`` and ``str``;
- a one-key object whose key is a tag: ``{"L": [...]}`` a list, ``{"T": [...]}``
  a tuple, ``{"D": [[key, value], ...]}`` a dict, ``{"A": {...}}`` a numpy
  array and ``{"S": {...}}`` a numpy scalar (dtype + shape + base64 bytes),
  ``{"P": {...}}`` a torch tensor (detached, on the CPU), ``{"E": 0}``
  Ellipsis, ``{"C": [re, im]}`` a complex, ``{"B": "base64"}`` bytes,
  ``{"R": {...}}`` a reference to an object that stays in the kernel, and
  ``{"K": "id"}`` an object the grader sent earlier (so identity survives).

Arrays are rebuilt with ``numpy.frombuffer`` from an allow-listed dtype; any
tag, dtype or shape the decoder does not expect is a :class:`CodecError`.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["ARITHMETIC", "COMPARISONS", "DTYPES", "UNARY", "CodecError", "decode", "encode"]

# The operators a proxy forwards to the kernel, by their names in the operator module.
# Both sides of the protocol read them here: remote.Proxy defines the dunders, the
# agent applies the operator.
ARITHMETIC = (
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul",
    "and_", "or_", "xor", "lshift", "rshift",
)  # fmt: skip
COMPARISONS = ("lt", "le", "eq", "ne", "gt", "ge")
UNARY = ("neg", "pos", "abs", "invert")

# dtypes that may cross: numbers and booleans, little-endian, no objects.
DTYPES = frozenset(
    {
        "|b1",
        "|i1",
        "|u1",
        "<i2",
        "<u2",
        "<i4",
        "<u4",
        "<i8",
        "<u8",
        "<f2",
        "<f4",
        "<f8",
        "<c8",
        "<c16",
    }
)
TORCH_DTYPES = frozenset(
    {
        "bool",
        "uint8",
        "int8",
        "int16",
        "int32",
        "int64",
        "float16",
        "bfloat16",
        "float32",
        "float64",
        "complex64",
        "complex128",
    }
)
MAX_DEPTH = 64
MAX_ITEMS = 5_000_000


class CodecError(ValueError):
    """Data from a kernel that is not in the expected format."""


# ---------------------------------------------------------------- encoding (kernel side)


def _array_payload(array) -> dict:
    import numpy as np

    shape = list(np.shape(array))
    array = np.ascontiguousarray(array)
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    array = array.astype(dtype, copy=False)
    return {
        "dtype": dtype.str,
        "shape": shape,
        "data": base64.b64encode(array.tobytes()).decode("ascii"),
    }


def encode(
    value: Any,
    reference: Callable[[Any], dict],
    depth: int = 0,
    known: Callable[[Any], str | None] | None = None,
) -> Any:
    """``value`` as tagged JSON.

    ``reference(obj)`` encodes what cannot travel by value; ``known(obj)`` gives the id
    of a mutable object that the grader sent (it goes back as ``{"K": id}``).
    """
    if depth > MAX_DEPTH:
        return reference(value)
    if known is not None and not isinstance(value, (str, bytes, int, float, tuple)):
        key = known(value)
        if key is not None:
            return {"K": key}
    if value is None or isinstance(value, (bool, str)):
        return value if not isinstance(value, str) else str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if value is Ellipsis:
        return {"E": 0}
    if isinstance(value, complex):
        return {"C": [value.real, value.imag]}
    if isinstance(value, (bytes, bytearray)):
        return {"B": base64.b64encode(bytes(value)).decode("ascii")}
    module = type(value).__module__
    if module == "numpy" or module.startswith("numpy."):
        import numpy as np

        if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
            return {"A": _array_payload(value)}
        if isinstance(value, np.generic) and value.dtype.kind in "biufc":
            return {"S": _array_payload(np.asarray(value))}
    if module == "torch" and type(value).__name__ in ("Tensor", "Parameter", "Size"):
        import torch

        if isinstance(value, torch.Size):
            return {"T": [int(v) for v in value]}
        if isinstance(value, torch.Tensor) and not value.is_sparse:
            name = str(value.dtype).removeprefix("torch.")
            if name in TORCH_DTYPES:
                tensor = value.detach().to("cpu").contiguous()
                if name == "bfloat16":
                    tensor = tensor.view(torch.int16)
                payload = _array_payload(tensor.numpy())
                payload["torch"] = name
                payload["device"] = str(value.device)
                return {"P": payload}
    if isinstance(value, (list, tuple)) and type(value).__module__ in ("builtins", "collections"):
        items = [encode(v, reference, depth + 1, known) for v in value]
        return {"L": items} if isinstance(value, list) else {"T": items}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return {"T": [encode(v, reference, depth + 1, known) for v in value]}
    if isinstance(value, Mapping) and type(value).__module__ in ("builtins", "collections"):
        return {
            "D": [
                [encode(k, reference, depth + 1, known), encode(v, reference, depth + 1, known)]
                for k, v in dict.items(dict(value))
            ]
        }
    return reference(value)


# ---------------------------------------------------------------- decoding (grader side)


def _b64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise CodecError("expected base64 text")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as error:
        raise CodecError(f"bad base64: {error}") from None


def _array(payload: Any):
    import numpy as np

    if not isinstance(payload, dict) or set(payload) - {
        "dtype",
        "shape",
        "data",
        "torch",
        "device",
    }:
        raise CodecError("bad array payload")
    dtype = payload.get("dtype")
    if dtype not in DTYPES:
        raise CodecError(f"dtype {dtype!r} is not allowed")
    shape = payload.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise CodecError("bad array shape")
    if len(shape) > 32:
        raise CodecError("too many dimensions")
    raw = _b64(payload.get("data"))
    dt = np.dtype(dtype)
    count = math.prod(shape)
    if count * dt.itemsize != len(raw):
        raise CodecError("array size does not match its shape")
    return np.frombuffer(raw, dtype=dt).reshape(shape).copy()


class _Decoder:
    def __init__(self, reference: Callable[[dict], Any], known: Callable[[str], Any]):
        self.reference = reference
        self.known = known
        self.items = 0

    def __call__(self, value: Any, depth: int = 0) -> Any:
        self.items += 1
        if self.items > MAX_ITEMS or depth > MAX_DEPTH + 2:
            raise CodecError("the data is too large or too deeply nested")
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if not isinstance(value, dict) or len(value) != 1:
            raise CodecError(f"unexpected JSON value of type {type(value).__name__}")
        ((tag, body),) = value.items()
        if tag == "L" or tag == "T":
            if not isinstance(body, list):
                raise CodecError("bad sequence")
            items = [self(v, depth + 1) for v in body]
            return items if tag == "L" else tuple(items)
        if tag == "D":
            if not isinstance(body, list):
                raise CodecError("bad dict")
            out = {}
            for pair in body:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise CodecError("bad dict item")
                key = self(pair[0], depth + 1)
                try:
                    out[key] = self(pair[1], depth + 1)
                except TypeError:
                    raise CodecError("unhashable dict key") from None
            return out
        if tag == "A":
            return _array(body)
        if tag == "S":
            array = _array(body)
            if array.shape != ():
                raise CodecError("a numpy scalar must have shape ()")
            return array[()]
        if tag == "P":
            return _tensor(body)
        if tag == "E":
            return Ellipsis
        if tag == "C":
            if (
                not isinstance(body, list)
                or len(body) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in body)
            ):
                raise CodecError("bad complex")
            return complex(body[0], body[1])
        if tag == "B":
            return _b64(body)
        if tag == "R":
            if not isinstance(body, dict):
                raise CodecError("bad reference")
            return self.reference(body)
        if tag == "K":
            if not isinstance(body, str):
                raise CodecError("bad known-object id")
            return self.known(body)
        raise CodecError(f"unknown tag {tag!r}")


def _tensor(payload: Any):
    import torch

    name = payload.get("torch") if isinstance(payload, dict) else None
    if name not in TORCH_DTYPES:
        raise CodecError(f"torch dtype {name!r} is not allowed")
    array = _array({k: v for k, v in payload.items() if k not in ("torch", "device")})
    tensor = torch.from_numpy(array)
    if name == "bfloat16":
        if array.dtype.str != "<i2":
            raise CodecError("bfloat16 travels as int16 bits")
        tensor = tensor.view(torch.bfloat16)
    elif str(tensor.dtype).removeprefix("torch.") != name:
        raise CodecError("tensor dtype does not match its data")
    return tensor


def decode(
    value: Any,
    *,
    reference: Callable[[dict], Any],
    known: Callable[[str], Any],
) -> Any:
    """Rebuild a value from :func:`encode`'s JSON (already parsed by ``json.loads``)."""
    return _Decoder(reference, known)(value)
