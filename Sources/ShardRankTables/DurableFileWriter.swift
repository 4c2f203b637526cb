#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif

/// A file being written under a temporary name and published by `commit()` (fsync, then rename to
/// its final name). Dropping it uncommitted removes the temporary file.
final class DurableFileWriter {
    let finalPath: String
    let tempPath: String
    private var fd: Int32

    init(finalPath: String) throws {
        self.finalPath = finalPath
        self.tempPath = finalPath + ".tmp-\(getpid())"
        unlink(tempPath)
        let fd = open(tempPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw TableError(.io, FileIO.errnoMessage("create"), path: tempPath) }
        self.fd = fd
    }

    /// Writes all of `bytes` at `offset`.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw TableError(.io, FileIO.errnoMessage("write"), path: tempPath)
            }
            done += n
        }
    }

    /// fsync, close, rename to the final name.
    func commit() throws {
        guard fsync(fd) == 0 else { throw TableError(.io, FileIO.errnoMessage("fsync"), path: tempPath) }
        close(fd)
        fd = -1
        try FileIO.rename(tempPath, finalPath)
    }

    deinit {
        if fd >= 0 {
            close(fd)
            unlink(tempPath)
        }
    }
}
