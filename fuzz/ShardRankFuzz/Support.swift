#if canImport(Glibc)
import Glibc
#endif

/// A per-process scratch file for the harnesses whose parsers read a path: in /dev/shm (tmpfs)
/// where there is one. On a disk filesystem, truncating and rewriting the same file every input
/// costs a flush (ext4's auto_da_alloc) and runs ~25× slower.
func scratchFile(_ tag: String) -> String {
    let dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
    return "\(dir)/shardrank-fuzz-\(tag)-\(getpid())"
}

/// Writes `count` bytes at `bytes` to `path` (created or truncated): scratch inputs, and the seeds
/// `--write-seeds` writes.
func writeScratch(_ path: String, _ bytes: UnsafeRawPointer?, _ count: Int) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    precondition(fd >= 0, "cannot create \(path)")
    if let bytes, count > 0 { precondition(write(fd, bytes, count) == count, "short write to \(path)") }
    close(fd)
}

/// Removes this process's scratch files (registered with atexit: libFuzzer exits from inside its
/// driver).
func removeScratchFiles() {
    for tag in ["table", "npy", "csv"] { unlink(scratchFile(tag)) }
}

/// The harnesses' assertion: unlike `precondition`, it keeps its message in release (-O)
/// builds, so a crash report says which property failed.
@inline(__always)
func require(_ condition: Bool, _ message: @autoclosure () -> String = "requirement failed",
             file: StaticString = #fileID, line: UInt = #line) {
    if !condition { fatalError(message(), file: file, line: line) }
}
