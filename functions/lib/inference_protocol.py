"""The Open Inference Protocol (KServe v2) over REST, for one model that takes encoded images.

Input `image`: BYTES, shape [N] or [N, 1], one encoded image per element; in JSON each element is the
image in base64, with the binary tensor extension it is the raw bytes (each element prefixed by its
little-endian uint32 length, as Triton and KServe clients send it). Outputs: `probabilities` FP32
[N, classes] and `predicted_class` BYTES [N], in JSON or binary as the request asks
(`binary_data` per output, or `binary_data_output` for all).
"""

from __future__ import annotations

import base64
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from functions.lib.errors import BadRequest
from functions.lib.layout import MODEL_NAME

INPUT = "image"
OUTPUTS = ("probabilities", "predicted_class")
HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    images: list[bytes]
    outputs: dict[str, bool]  # requested output name -> answer in binary


def model_metadata(versions: list[str], classes: int) -> dict[str, Any]:
    return {
        "name": MODEL_NAME,
        "versions": versions,
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
            {"name": "predicted_class", "datatype": "BYTES", "shape": [-1]},
        ],
    }


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """Decode an infer request, JSON or JSON header plus binary tensors; every flaw is a BadRequest."""
    binary = b""
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            raise BadRequest(f"{HEADER_LENGTH} must be a whole number, got {header_length!r}") from None
        if not 0 < size <= len(body):
            raise BadRequest(f"{HEADER_LENGTH} {size} does not fit in a body of {len(body)} bytes")
        body, binary = body[:size], body[size:]
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the inference request header is not valid JSON") from None
    except RecursionError:
        raise BadRequest("the inference request header's JSON is nested too deeply") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise BadRequest("an inference request is a JSON object with a list of 'inputs'")
    inputs = request["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict) or inputs[0].get("name") != INPUT:
        raise BadRequest(f"expected exactly one input named {INPUT!r}")
    tensor = inputs[0]
    if tensor.get("datatype") != "BYTES":
        raise BadRequest(f"input {INPUT!r} must have datatype BYTES, got {tensor.get('datatype')!r}")
    count = _element_count(tensor.get("shape"))
    binary_size = _parameters(tensor, f"input {INPUT!r}").get("binary_data_size")
    if binary_size is not None:
        if binary_size != len(binary):
            raise BadRequest(f"binary_data_size {binary_size} does not match the {len(binary)} bytes sent")
        images = _unpack_bytes(binary)
    elif binary:
        raise BadRequest("binary data was sent but the input declares no binary_data_size")
    else:
        images = [_from_base64(item) for item in _flatten(tensor.get("data"))]
    if len(images) != count:
        raise BadRequest(
            f"input {INPUT!r} has shape {tensor.get('shape')} but carries {len(images)} elements"
        )
    if not images:
        raise BadRequest("the request carries no image")
    return InferRequest(_request_id(request), images, _requested_outputs(request))


def encode_response(
    request: InferRequest, version: str, classes: tuple[str, ...], probabilities: np.ndarray
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary tensors follow it."""
    values = {
        "probabilities": probabilities.astype("<f4"),
        "predicted_class": np.array([classes[i] for i in probabilities.argmax(axis=1)], dtype=object),
    }
    outputs, buffers = [], []
    for name, as_binary in request.outputs.items():
        array = values[name]
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": "FP32" if name == "probabilities" else "BYTES",
            "shape": list(array.shape),
        }
        if as_binary:
            raw = array.tobytes() if array.dtype != object else _pack_bytes([s.encode() for s in array])
            tensor["parameters"] = {"binary_data_size": len(raw)}
            buffers.append(raw)
        else:
            tensor["data"] = array.ravel().tolist()
        outputs.append(tensor)
    response = {"model_name": MODEL_NAME, "model_version": version, "outputs": outputs}
    if request.id is not None:
        response["id"] = request.id
    header = json.dumps(response).encode()
    if not buffers:
        return header, None
    return header + b"".join(buffers), len(header)


def _element_count(shape: Any) -> int:
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(isinstance(d, int) and d >= 0 for d in shape)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise BadRequest(f"input {INPUT!r} must have shape [N] or [N, 1], got {shape!r}")
    return math.prod(shape)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise BadRequest(f"input {INPUT!r} needs 'data' (a list of base64 strings) or binary data")
    return [leaf for item in data for leaf in (_flatten(item) if isinstance(item, list) else [item])]


def _from_base64(item: Any) -> bytes:
    if not isinstance(item, str):
        raise BadRequest(f"each element of {INPUT!r} must be a base64 string in JSON")
    try:
        return base64.b64decode(item, validate=True)
    except ValueError:  # binascii.Error, or a ValueError of its own for characters outside ASCII
        raise BadRequest(f"an element of {INPUT!r} is not valid base64") from None


def _unpack_bytes(raw: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest("the binary BYTES tensor ends inside an element's length prefix")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise BadRequest("the binary BYTES tensor is shorter than an element's length prefix says")
        items.append(raw[offset : offset + size])
        offset += size
    return items


def _pack_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _parameters(obj: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = obj.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"the parameters of {where} must be an object")
    return parameters


def _request_id(request: dict[str, Any]) -> str | None:
    value = request.get("id")
    if value is not None and not isinstance(value, str):
        raise BadRequest("'id' must be a string")
    return value


def _requested_outputs(request: dict[str, Any]) -> dict[str, bool]:
    parameters = _parameters(request, "the request")
    default_binary = bool(parameters.get("binary_data_output", False))
    wanted = request.get("outputs")
    if wanted is None:
        return dict.fromkeys(OUTPUTS, default_binary)
    if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
        raise BadRequest("'outputs' must be a list of objects")
    outputs = {}
    for output in wanted:
        name = output.get("name")
        if name not in OUTPUTS:
            raise BadRequest(f"unknown output {name!r}; this model has {', '.join(OUTPUTS)}")
        outputs[name] = bool(_parameters(output, f"output {name!r}").get("binary_data", default_binary))
    return outputs
