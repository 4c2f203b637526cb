internal import CNGHTTP2
import RPCCore

// All nghttp2 callbacks live in this file. Each is a non-capturing closure that borrows its
// `HTTP2Session` from `user_data` with `HTTP2Session.with`, records what happened and returns;
// the session's owner acts on the events after the C call returns.

extension HTTP2Session {
    static func installCallbacks(_ cbs: OpaquePointer) {
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs) { _, frame, userData in
            HTTP2Session.with(userData) { s in
                s.pendingHeadersStream = frame!.pointee.hd.stream_id
                s.pendingHeaders.reset()
                return 0
            }
        }

        nghttp2_session_callbacks_set_on_header_callback(cbs) { _, frame, name, namelen, value, valuelen, _, userData in
            HTTP2Session.with(userData) { s in
                guard frame!.pointee.hd.stream_id == s.pendingHeadersStream else { return 0 }
                let p = s.pendingHeaders
                p.bytes += namelen + valuelen + 32
                if p.tooLarge {
                    // Far past the limit (an HPACK bomb: one-byte references to a large table
                    // entry): reset the stream (RST_STREAM INTERNAL_ERROR, counted by the limiter
                    // of resets this side sends) so that nghttp2 only decodes the rest of the
                    // block, without checking and handing out every field. Just past it, the
                    // request is answered RESOURCE_EXHAUSTED naming the limit instead.
                    if p.bytes > HTTP2Session.headerListResetFactor * s.configuration.maxHeaderListBytes {
                        return Int32(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
                    }
                    return 0
                }
                if p.bytes > s.configuration.maxHeaderListBytes {
                    p.tooLarge = true
                } else {
                    p.headers.append(s.headerStrings.strings(name: UnsafeRawBufferPointer(start: name, count: namelen),
                                                             value: UnsafeRawBufferPointer(start: value, count: valuelen)))
                }
                return 0
            }
        }

        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs) { _, frame, userData in
            HTTP2Session.with(userData) { s in
                let hd = frame!.pointee.hd
                let endStream = hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
                switch UInt32(hd.type) {
                case NGHTTP2_HEADERS.rawValue:
                    let p = s.pendingHeaders
                    if s.pendingHeadersStream == hd.stream_id {
                        s.events.append(.headers(streamID: hd.stream_id, headers: p.headers, endStream: endStream, tooLarge: p.tooLarge))
                    } else {
                        s.events.append(.headers(streamID: hd.stream_id, headers: [], endStream: endStream, tooLarge: false))
                    }
                    s.pendingHeadersStream = 0
                    p.reset()
                case NGHTTP2_DATA.rawValue:
                    if endStream { s.events.append(.endStream(streamID: hd.stream_id)) }
                case NGHTTP2_GOAWAY.rawValue:
                    s.events.append(.goAway(lastStreamID: frame!.pointee.goaway.last_stream_id, errorCode: frame!.pointee.goaway.error_code))
                case NGHTTP2_SETTINGS.rawValue:
                    if hd.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) == 0 { s.peerSettingsReceived = true }
                case NGHTTP2_PING.rawValue:
                    if hd.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) != 0 { s.events.append(.pingAck) }
                default:
                    break
                }
                return 0
            }
        }

        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs) { _, _, streamID, data, len, userData in
            HTTP2Session.with(userData) { s in
                s.events.append(.data(streamID: streamID, bytes: Array(UnsafeBufferPointer(start: data, count: len))))
                return 0
            }
        }

        nghttp2_session_callbacks_set_on_frame_send_callback(cbs) { _, frame, userData in
            HTTP2Session.with(userData) { s in
                let hd = frame!.pointee.hd
                if hd.type == UInt8(NGHTTP2_RST_STREAM.rawValue) { s.countSentReset() }
                if !s.resetAfterEnd.isEmpty, hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0,
                   s.resetAfterEnd.remove(hd.stream_id) != nil {
                    s.resetsDue.append(hd.stream_id)
                }
                return 0
            }
        }

        nghttp2_session_callbacks_set_on_stream_close_callback(cbs) { _, streamID, errorCode, userData in
            HTTP2Session.with(userData) { s in
                if !s.resetAfterEnd.isEmpty { s.resetAfterEnd.remove(streamID) }
                if s.pendingHeadersStream == streamID {
                    s.pendingHeadersStream = 0
                    s.pendingHeaders.reset()
                }
                if let o = s.outbound.removeValue(forKey: streamID) { s.queuedBytes -= o.pendingBytes }
                s.events.append(.streamClosed(streamID: streamID, errorCode: errorCode))
                return 0
            }
        }

        // Non-DATA frames: copied into the sink as they are serialised.
        nghttp2_session_callbacks_set_send_callback(cbs) { _, data, length, _, userData in
            HTTP2Session.with(userData) { s in
                s.sink?(UnsafeRawBufferPointer(start: data, count: length))
                return length
            }
        }

        // DATA frames with NGHTTP2_DATA_FLAG_NO_COPY: the 9-byte frame header, then the payload
        // straight from the queued message: as spans to `messageSink` (no copy), or copied into
        // the sink.
        nghttp2_session_callbacks_set_send_data_callback(cbs) { _, _, framehd, length, source, userData in
            HTTP2Session.with(userData) { s in
                s.sink?(UnsafeRawBufferPointer(start: framehd, count: 9))
                guard let o = HTTP2Session.outboundStream(source) else { return Int32(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
                var remaining = length
                while remaining > 0, let first = o.chunks.first {
                    let take = min(remaining, first.count - o.offset)
                    if let messages = s.messageSink {
                        messages(first, o.offset ..< o.offset + take)
                    } else {
                        first.withUnsafeBytes { b in
                            s.sink?(UnsafeRawBufferPointer(rebasing: b[o.offset ..< o.offset + take]))
                        }
                    }
                    o.offset += take
                    remaining -= take
                    o.pendingBytes -= take
                    s.queuedBytes -= take
                    if o.offset == first.count {
                        o.chunks.removeFirst()
                        o.offset = 0
                    }
                }
                return 0
            }
        }
    }

    /// The queue behind a data provider's source (`dataProvider(_:)`), borrowed.
    @inline(__always)
    static func outboundStream(_ source: UnsafeMutablePointer<nghttp2_data_source>?) -> OutboundStream? {
        guard let p = source?.pointee.ptr else { return nil }
        return Unmanaged<OutboundStream>.fromOpaque(p).takeUnretainedValue()
    }

    /// The data source of every stream this side sends a body on: says how much of the queued
    /// data goes in the next DATA frame (NO_COPY: `send_data_callback` writes it), defers when the
    /// queue is empty, and at the end either sets END_STREAM or submits the trailers.
    static let readCallback: nghttp2_data_source_read_callback = { session, streamID, _, length, dataFlags, source, userData in
        HTTP2Session.with(userData) { s in
            guard let o = HTTP2Session.outboundStream(source), !o.cancelled else {
                return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
            }
            let n = min(length, o.pendingBytes)
            var flags = NGHTTP2_DATA_FLAG_NO_COPY.rawValue
            if n == o.pendingBytes && o.finished {
                flags |= NGHTTP2_DATA_FLAG_EOF.rawValue
                if let trailers = o.trailers {
                    flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
                    let rv = trailers.withNV { nv, count in nghttp2_submit_trailer(session, streamID, nv, count) }
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
}
