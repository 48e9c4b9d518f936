"""Edge-cloud offloading (floor 4): the Open Inference Protocol codec and the cloud server.

``protocol`` encodes and validates KServe v2 requests and responses with binary tensors;
``server`` serves a :class:`~exitwise.nets.MultiExitNet`'s cloud parts as a FastAPI app.
"""

from exitwise.serving.protocol import (
    DATATYPES,
    HEADER_LENGTH,
    InferRequest,
    ModelMetadata,
    ProtocolError,
    TensorSpec,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "InferRequest",
    "ModelMetadata",
    "ProtocolError",
    "TensorSpec",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
]
