import base64
import json
import struct

import numpy as np
import pytest

from functions.lib.errors import BadRequest
from functions.lib.inference_protocol import encode_response, parse_request

PROBABILITIES = np.array([[0.75, 0.25], [0.125, 0.875]])


def json_request(**tensor) -> bytes:
    return json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", **tensor}]}).encode()


def test_json_request_carries_base64_images() -> None:
    body = json_request(
        shape=[2, 1], data=[[base64.b64encode(b"one").decode()], [base64.b64encode(b"two").decode()]]
    )
    request = parse_request(body, None)
    assert request.images == [b"one", b"two"]
    assert request.outputs == {"probabilities": False, "predicted_class": False}
    assert request.id is None


def test_binary_request_and_binary_response() -> None:
    raw = struct.pack("<I", 3) + b"one" + struct.pack("<I", 0) + b""
    header = json.dumps(
        {
            "id": "7",
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    request = parse_request(header + raw, str(len(header)))
    assert request.images == [b"one", b""]
    body, header_length = encode_response(request, "3", ("dandelion", "grass"), PROBABILITIES)
    head = json.loads(body[:header_length])
    assert head == {
        "model_name": "dandelion-grass",
        "model_version": "3",
        "id": "7",
        "outputs": [
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": [2, 2],
                "parameters": {"binary_data_size": 16},
            },
            {
                "name": "predicted_class",
                "datatype": "BYTES",
                "shape": [2],
                "parameters": {"binary_data_size": 22},
            },
        ],
    }
    tail = body[header_length:]
    assert np.frombuffer(tail[:16], dtype="<f4").tolist() == [0.75, 0.25, 0.125, 0.875]
    assert tail[16:] == struct.pack("<I", 9) + b"dandelion" + struct.pack("<I", 5) + b"grass"


def test_json_response_with_only_the_requested_output() -> None:
    body = json.dumps(
        {
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "data": ["b25l", "dHdv"]}],
            "outputs": [{"name": "predicted_class"}],
        }
    ).encode()
    payload, header_length = encode_response(
        parse_request(body, None), "3", ("dandelion", "grass"), PROBABILITIES
    )
    assert header_length is None
    assert json.loads(payload)["outputs"] == [
        {"name": "predicted_class", "datatype": "BYTES", "shape": [2], "data": ["dandelion", "grass"]}
    ]


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"{not json", None, "the inference request header is not valid JSON"),
        (b"[]", None, "an inference request is a JSON object with a list of 'inputs'"),
        (json.dumps({"inputs": []}).encode(), None, "expected exactly one input named 'image'"),
        (
            json.dumps(
                {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
            ).encode(),
            None,
            "input 'image' must have datatype BYTES, got 'FP32'",
        ),
        (
            json_request(shape=[1, 3], data=["b25l"]),
            None,
            "input 'image' must have shape [N] or [N, 1], got [1, 3]",
        ),
        (json_request(shape=[2], data=["b25l"]), None, "input 'image' has shape [2] but carries 1 elements"),
        (json_request(shape=[1], data=[17]), None, "each element of 'image' must be a base64 string in JSON"),
        (json_request(shape=[1], data=["aé=="]), None, "an element of 'image' is not valid base64"),
        (
            json_request(shape=[1]),
            None,
            "input 'image' needs 'data' (a list of base64 strings) or binary data",
        ),
        (json_request(shape=[0], data=[]), None, "the request carries no image"),
        (
            json_request(shape=[1], data=["b25l"]),
            "x",
            "Inference-Header-Content-Length must be a whole number, got 'x'",
        ),
        (
            json_request(shape=[1], data=["b25l"]),
            "9999",
            "Inference-Header-Content-Length 9999 does not fit in a body of 84 bytes",
        ),
        (
            json_request(shape=[1], parameters={"binary_data_size": 10}) + b"\x05\x00\x00\x00abc",
            str(len(json_request(shape=[1], parameters={"binary_data_size": 10}))),
            "binary_data_size 10 does not match the 7 bytes sent",
        ),
        (
            json_request(shape=[1], parameters={"binary_data_size": 7}) + b"\x05\x00\x00\x00abc",
            str(len(json_request(shape=[1], parameters={"binary_data_size": 7}))),
            "the binary BYTES tensor is shorter than an element's length prefix says",
        ),
        (
            json.dumps(
                {
                    "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["b25l"]}],
                    "outputs": [{"name": "logits"}],
                }
            ).encode(),
            None,
            "unknown output 'logits'; this model has probabilities, predicted_class",
        ),
    ],
)
def test_malformed_requests_are_bad_requests(body: bytes, header_length: str | None, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_request(body, header_length)
    assert str(caught.value) == message
