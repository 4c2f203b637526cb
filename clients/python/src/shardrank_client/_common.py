"""Channels, health checks and enum names shared by Recommender and Shards (private)."""
from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Sequence, Tuple

import grpc

from .errors import ShardRankError
from .pb import common_pb2, health_pb2, health_pb2_grpc

Options = Sequence[Tuple[str, Any]]


class Channels:
    """One gRPC channel per address, made on first use; closed together."""

    def __init__(self, options: Optional[Options], credentials: Optional[grpc.ChannelCredentials]) -> None:
        self._options = list(options or [])
        self._credentials = credentials
        self._channels: Dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._closed = False

    def get(self, address: str) -> grpc.Channel:
        with self._lock:
            if self._closed:
                raise ValueError("the client is closed")
            ch = self._channels.get(address)
            if ch is None:
                if self._credentials is None:
                    ch = grpc.insecure_channel(address, options=self._options)
                else:
                    ch = grpc.secure_channel(address, self._credentials, options=self._options)
                self._channels[address] = ch
            return ch

    def close(self) -> None:
        with self._lock:
            self._closed = True
            channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            ch.close()


def check_timeout(timeout: Optional[float], default: float) -> float:
    t = default if timeout is None else timeout
    if not t > 0:
        raise ValueError(f"timeout must be > 0 seconds (got {t!r})")
    return float(t)


def health(channels: Channels, addresses: Sequence[str], timeout: float) -> Dict[str, str]:
    """``grpc.health.v1.Health/Check`` of every address at once: its serving status
    (``SERVING``, ``NOT_SERVING``, ...), or the status name of the failed call (``UNAVAILABLE``,
    ``DEADLINE_EXCEEDED``, ...)."""
    calls = {a: health_pb2_grpc.HealthStub(channels.get(a)).Check.future(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
             for a in dict.fromkeys(addresses)}
    out: Dict[str, str] = {}
    for a, f in calls.items():
        try:
            out[a] = enum_name(health_pb2.HealthCheckResponse.ServingStatus, f.result().status)
        except grpc.RpcError as e:
            out[a] = ShardRankError.from_rpc(e, a).code
    return out


def enum_name(enum: Any, value: int, prefix: str = "") -> str:
    """``SOURCE_POPULAR`` -> ``popular`` (with prefix ``SOURCE_``); an unknown number stays a number."""
    try:
        name = enum.Name(value)
    except ValueError:
        return str(value)
    return name[len(prefix):].lower() if prefix and name.startswith(prefix) else name


def enum_value(enum: Any, name: str, prefix: str, what: str) -> int:
    """``popular`` -> ``SOURCE_POPULAR``'s number; ``ValueError`` naming the known names otherwise."""
    try:
        return enum.Value(prefix + name.upper())
    except (ValueError, AttributeError):
        known = [n[len(prefix):].lower() for n in enum.keys() if not n.endswith("UNSPECIFIED")]
        raise ValueError(f"unknown {what} {name!r} (known: {', '.join(known)})") from None


SOURCE = common_pb2.Source
DTYPE = common_pb2.DType
