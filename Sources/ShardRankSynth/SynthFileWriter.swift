#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif

#if _endian(big)
#error("the .npy files are written as little-endian from host memory")
#endif

private func sysClose(_ fd: Int32) -> Int32 { close(fd) }
private func sysWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int { write(fd, p, n) }

/// A buffered, write-only file (1 MiB buffer, `write(2)` when full): streaming output, so a CSV
/// of any length never sits in memory. Errors are thrown as `SynthError` naming the file.
/// One owner, one thread; `close()` flushes and must be called (the deinit only releases the fd).
final class SynthFileWriter {
    let path: String
    private var fd: Int32
    private let buffer: UnsafeMutableRawBufferPointer
    private var used = 0
    /// Bytes handed to `write` plus buffered.
    private(set) var bytesWritten = 0

    init(path: String, capacity: Int = 1 << 20) throws {
        self.path = path
        var fd: Int32
        repeat { fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) } while fd < 0 && errno == EINTR
        guard fd >= 0 else { throw SynthError.io(path, "cannot create", errno) }
        self.fd = fd
        self.buffer = .allocate(byteCount: capacity, alignment: 64)
    }

    deinit {
        if fd >= 0 { _ = sysClose(fd) }
        buffer.deallocate()
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        if bytes.count > buffer.count - used { try flush() }
        if bytes.count >= buffer.count {
            try writeAll(bytes)
        } else {
            UnsafeMutableRawBufferPointer(rebasing: buffer[used..<(used + bytes.count)]).copyMemory(from: bytes)
            used += bytes.count
        }
        bytesWritten += bytes.count
    }

    func write(_ s: String) throws {
        var s = s
        try s.withUTF8 { try write(UnsafeRawBufferPointer($0)) }
    }

    @inline(__always) func byte(_ b: UInt8) throws {
        if used == buffer.count { try flush() }
        buffer[used] = b
        used += 1
        bytesWritten += 1
    }

    /// Appends the decimal digits of `v`.
    func decimal(_ v: Int64) throws {
        if 24 > buffer.count - used { try flush() }
        var x = v.magnitude
        if v < 0 { buffer[used] = 0x2D; used += 1; bytesWritten += 1 }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes of scratch
        let n = withUnsafeMutableBytes(of: &digits) { d -> Int in
            var n = 0
            repeat { d[23 - n] = UInt8(truncatingIfNeeded: x % 10) + 0x30; x /= 10; n += 1 } while x > 0
            UnsafeMutableRawBufferPointer(rebasing: buffer[used..<(used + n)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: d[(24 - n)...]))
            return n
        }
        used += n
        bytesWritten += n
    }

    func decimal(_ v: Int) throws { try decimal(Int64(v)) }

    func flush() throws {
        guard used > 0 else { return }
        try writeAll(UnsafeRawBufferPointer(rebasing: buffer[0..<used]))
        used = 0
    }

    func close() throws {
        try flush()
        guard fd >= 0 else { return }
        let rc = sysClose(fd)
        fd = -1
        guard rc == 0 else { throw SynthError.io(path, "close", errno) }
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        var off = 0
        while off < bytes.count {
            let n = sysWrite(fd, bytes.baseAddress! + off, bytes.count - off)
            if n < 0 {
                if errno == EINTR { continue }
                throw SynthError.io(path, "write", errno)
            }
            off += n
        }
    }

    /// A NumPy 1.0 header for a little-endian C-order array: magic, version 1.0, u16 header
    /// length, the dict padded with spaces and ended by `\n` so the data starts at a multiple of 64.
    static func npyHeader(descr: String, shape: [Int]) -> [UInt8] {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var dict = Array("{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }".utf8)
        let unpadded = 10 + dict.count + 1
        let padded = (unpadded + 63) / 64 * 64
        dict += [UInt8](repeating: 0x20, count: padded - unpadded)
        dict.append(0x0A)
        let len = dict.count
        return [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(len & 0xFF), UInt8(len >> 8)] + dict
    }
}

/// The adapters to the directory system calls.
enum SynthDirectory {
    /// `mkdir -p`: creates `path` and missing parents; an existing directory is fine.
    static func create(_ path: String) throws {
        guard !path.isEmpty else { throw SynthError.invalidArgument("--out must not be empty") }
        var prefix = path.hasPrefix("/") ? "/" : ""
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            prefix += (prefix.isEmpty || prefix.hasSuffix("/") ? "" : "/") + part
            if isDirectory(prefix) { continue }
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST { throw SynthError.io(prefix, "cannot create directory", errno) }
            guard isDirectory(prefix) else { throw SynthError.io(prefix, "exists and is not a directory", ENOTDIR) }
        }
        guard access(path, W_OK | X_OK) == 0 else { throw SynthError.io(path, "directory is not writable", errno) }
    }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }
}
