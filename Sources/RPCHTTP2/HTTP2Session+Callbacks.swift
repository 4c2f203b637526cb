internal import CNGHTTP2
import RPCCore

// All nghttp2 callbacks live in this file. Each is a non-capturing closure that recovers its
// `HTTP2Session` from `user_data` with `HTTP2Session.from`, records what happened and returns;
// the session's owner acts on the events after the C call returns.

extension HTTP2Session {
    static func installCallbacks(_ cbs: OpaquePointer) {
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs) { _, frame, userData in
            let s = HTTP2Session.from(userData)
            s.pendingHeaders[frame!.pointee.hd.stream_id] = PendingHeaders()
            return 0
        }

        nghttp2_session_callbacks_set_on_header_callback(cbs) { _, frame, name, namelen, value, valuelen, _, userData in
            let s = HTTP2Session.from(userData)
            let id = frame!.pointee.hd.stream_id
            guard let p = s.pendingHeaders[id] else { return 0 }
            if p.tooLarge { return 0 }
            p.bytes += namelen + valuelen + 32
            if p.bytes > s.configuration.maxHeaderListBytes {
                p.tooLarge = true
            } else {
                p.headers.append((String(decoding: UnsafeBufferPointer(start: name, count: namelen), as: UTF8.self),
                                  String(decoding: UnsafeBufferPointer(start: value, count: valuelen), as: UTF8.self)))
            }
            return 0
        }

        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs) { _, frame, userData in
            let s = HTTP2Session.from(userData)
            let hd = frame!.pointee.hd
            let endStream = hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
            switch UInt32(hd.type) {
            case NGHTTP2_HEADERS.rawValue:
                let p = s.pendingHeaders.removeValue(forKey: hd.stream_id) ?? PendingHeaders()
                s.events.append(.headers(streamID: hd.stream_id, headers: p.headers, endStream: endStream, tooLarge: p.tooLarge))
            case NGHTTP2_DATA.rawValue:
                if endStream { s.events.append(.endStream(streamID: hd.stream_id)) }
            case NGHTTP2_GOAWAY.rawValue:
                s.events.append(.goAway(lastStreamID: frame!.pointee.goaway.last_stream_id, errorCode: frame!.pointee.goaway.error_code))
            default:
                break
            }
            return 0
        }

        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs) { _, _, streamID, data, len, userData in
            let s = HTTP2Session.from(userData)
            s.events.append(.data(streamID: streamID, bytes: Array(UnsafeBufferPointer(start: data, count: len))))
            return 0
        }

        nghttp2_session_callbacks_set_on_frame_send_callback(cbs) { _, frame, userData in
            let s = HTTP2Session.from(userData)
            let hd = frame!.pointee.hd
            if hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0, s.resetAfterEnd.remove(hd.stream_id) != nil {
                s.resetsDue.append(hd.stream_id)
            }
            return 0
        }

        nghttp2_session_callbacks_set_on_stream_close_callback(cbs) { _, streamID, errorCode, userData in
            let s = HTTP2Session.from(userData)
            s.resetAfterEnd.remove(streamID)
            s.pendingHeaders[streamID] = nil
            s.outbound[streamID] = nil
            s.events.append(.streamClosed(streamID: streamID, errorCode: errorCode))
            return 0
        }

        // Non-DATA frames: copied into the sink as they are serialised.
        nghttp2_session_callbacks_set_send_callback(cbs) { _, data, length, _, userData in
            let s = HTTP2Session.from(userData)
            s.sink?(UnsafeRawBufferPointer(start: data, count: length))
            return length
        }

        // DATA frames with NGHTTP2_DATA_FLAG_NO_COPY: the 9-byte frame header, then the payload
        // straight from the queued message (one copy, into the sink).
        nghttp2_session_callbacks_set_send_data_callback(cbs) { _, frame, framehd, length, _, userData in
            let s = HTTP2Session.from(userData)
            let id = frame!.pointee.hd.stream_id
            s.sink?(UnsafeRawBufferPointer(start: framehd, count: 9))
            guard let o = s.outbound[id] else { return Int32(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
            var remaining = length
            while remaining > 0, let first = o.chunks.first {
                let take = min(remaining, first.bytes.count - o.offset)
                first.bytes.withUnsafeBytes { b in
                    s.sink?(UnsafeRawBufferPointer(rebasing: b[o.offset ..< o.offset + take]))
                }
                o.offset += take
                remaining -= take
                o.pendingBytes -= take
                if o.offset == first.bytes.count {
                    o.chunks.removeFirst()
                    o.offset = 0
                }
            }
            return 0
        }
    }

    /// The data source of every stream this side sends a body on: says how much of the queued
    /// data goes in the next DATA frame (NO_COPY: `send_data_callback` writes it), defers when the
    /// queue is empty, and at the end either sets END_STREAM or submits the trailers.
    static let readCallback: nghttp2_data_source_read_callback = { session, streamID, _, length, dataFlags, _, userData in
        let s = HTTP2Session.from(userData)
        guard let o = s.outbound[streamID] else {
            return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
        }
        let n = min(length, o.pendingBytes)
        var flags = NGHTTP2_DATA_FLAG_NO_COPY.rawValue
        if n == o.pendingBytes && o.finished {
            flags |= NGHTTP2_DATA_FLAG_EOF.rawValue
            if let trailers = o.trailers {
                flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
                let rv = HTTP2Session.withNV(trailers) { nv, count in nghttp2_submit_trailer(session, streamID, nv, count) }
                if rv != 0 { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
            }
        } else if n == 0 {
            o.deferred = true
            return Int(NGHTTP2_ERR_DEFERRED.rawValue)
        }
        dataFlags!.pointee = flags
        return n
    }
}
