"""The one exception type of the client."""
from __future__ import annotations

from typing import Optional

import grpc


class ShardRankError(Exception):
    """A call failed: ``code`` is the gRPC status name (``"INVALID_ARGUMENT"``, ``"NOT_FOUND"``,
    ``"DEADLINE_EXCEEDED"``, ``"UNAVAILABLE"``, ... — docs/api.md lists when the servers send each),
    ``message`` the server's (or gRPC's) message, ``target`` the ``host:port`` called.

    ``str(error)`` is ``"CODE: message"``, e.g. ``INVALID_ARGUMENT: k=0 is out of range 1...1000``.
    Inconsistencies the client finds itself (shards that disagree about the shard count or the
    hash seed, an answer that does not fit its request) are ``FAILED_PRECONDITION`` / ``INTERNAL``.
    """

    def __init__(self, code: str, message: str, target: Optional[str] = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.target = target

    @property
    def status(self) -> Optional[grpc.StatusCode]:
        """``code`` as a ``grpc.StatusCode`` (None for a name gRPC does not know)."""
        return getattr(grpc.StatusCode, self.code, None)

    @classmethod
    def from_rpc(cls, error: grpc.RpcError, target: Optional[str] = None) -> "ShardRankError":
        """The exception for a failed grpcio call."""
        code = error.code() if hasattr(error, "code") else None
        details = error.details() if hasattr(error, "details") else None
        name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
        return cls(name, details or str(error), target)
