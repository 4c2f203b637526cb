"""A tiny HTTP/2 client on the `h2` library for tests that a stock gRPC client cannot express:
wrong content-type, compressed flag, raw grpc-timeout, header bombs, resets, garbage."""
import socket
import struct
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions


class Response:
    def __init__(self):
        self.headers = []
        self.trailers = []
        self.data = b""
        self.reset = None
        self.ended = False

    def header(self, name):
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def trailer(self, name):
        for k, v in self.trailers + self.headers:
            if k == name:
                return v
        return None


def grpc_frame(payload, compressed=False):
    return struct.pack(">BI", 1 if compressed else 0, len(payload)) + payload


class RawH2:
    def __init__(self, port, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                                                                validate_outbound_headers=False,
                                                                                normalize_outbound_headers=False))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.responses = {}
        self.goaway = None
        self.closed = False

    def request_headers(self, path, content_type="application/grpc", extra_headers=()):
        return [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
                ("content-type", content_type), ("te", "trailers")] + list(extra_headers)

    def start(self, path, body=b"", content_type="application/grpc", extra_headers=(), framed=True, end=True,
              compressed=False):
        sid = self.conn.get_next_available_stream_id()
        self.responses[sid] = Response()
        self.conn.send_headers(sid, self.request_headers(path, content_type, extra_headers), end_stream=False)
        payload = grpc_frame(body, compressed) if framed else body
        self.send_data(sid, payload, end)
        return sid

    def send_data(self, sid, payload, end):
        # Respect the peer's frame size; flow control windows are large on the server.
        step = self.conn.max_outbound_frame_size
        if not payload and end:
            self.conn.send_data(sid, b"", end_stream=True)
        for i in range(0, len(payload), step):
            chunk = payload[i:i + step]
            deadline = time.monotonic() + 10
            while self.conn.local_flow_control_window(sid) < len(chunk) and time.monotonic() < deadline:
                try:
                    self.sock.sendall(self.conn.data_to_send())
                except OSError:
                    self.closed = True
                    return
                self.pump(0.05)
                if self.closed or sid not in self.conn.streams:
                    return
            self.conn.send_data(sid, chunk, end_stream=end and i + step >= len(payload))
        try:
            self.sock.sendall(self.conn.data_to_send())
        except OSError:
            self.closed = True

    def call(self, path, body=b"", wait=5, **kw):
        sid = self.start(path, body, **kw)
        return self.wait(sid, wait)

    def pump(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            return
        except OSError:
            self.closed = True
            return
        if not data:
            self.closed = True
            return
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                self.responses.setdefault(ev.stream_id, Response()).headers = list(ev.headers)
            elif isinstance(ev, h2.events.TrailersReceived):
                self.responses[ev.stream_id].trailers = list(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                self.responses[ev.stream_id].data += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.responses[ev.stream_id].ended = True
            elif isinstance(ev, h2.events.StreamReset):
                r = self.responses.setdefault(ev.stream_id, Response())
                r.reset = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev
        out = self.conn.data_to_send()
        if out:
            try:
                self.sock.sendall(out)
            except OSError:
                self.closed = True

    def wait(self, sid, wait=5):
        deadline = time.monotonic() + wait
        r = self.responses[sid]
        while not (r.ended or r.reset is not None) and not self.closed and time.monotonic() < deadline:
            self.pump(max(0.001, deadline - time.monotonic()))
        return r

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
