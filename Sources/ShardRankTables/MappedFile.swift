#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif

/// A read-only, private memory mapping of a whole file. The mapping lives exactly as long as this
/// object (`munmap` in `deinit`); every pointer derived from `bytes` is valid only while the object
/// is alive. Immutable after `init`, hence `Sendable`: reads from any thread are safe as long as
/// the file is never modified in place (the format's publishing rule).
final class MappedFile: @unchecked Sendable {
    let path: String
    /// The whole file. Empty files are not mapped (`count == 0`).
    let bytes: UnsafeRawBufferPointer

    init(path: String) throws {
        self.path = path
        let fd = try FileIO.openReadOnly(path)
        defer { close(fd) }
        let size = try FileIO.fileSize(fd, path: path)
        guard size > 0 else {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw TableError(.io, FileIO.errnoMessage("mmap"), path: path)
        }
        bytes = UnsafeRawBufferPointer(start: UnsafeRawPointer(p), count: size)
    }

    /// Asks the kernel to read the file ahead (warming before a version switch).
    func adviseWillNeed() {
        guard let base = bytes.baseAddress else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base), bytes.count, MADV_WILLNEED)
    }

    /// Locks the mapping in memory (`mlock`: every page read in now, none paged out later).
    /// - Returns: nil on success, else why not (e.g. the RLIMIT_MEMLOCK limit without CAP_IPC_LOCK).
    func lockInMemory() -> String? {
        guard let base = bytes.baseAddress else { return nil }
        if mlock(base, bytes.count) == 0 { return nil }
        return FileIO.errnoMessage("mlock")
    }

    deinit {
        if let base = bytes.baseAddress {
            munmap(UnsafeMutableRawPointer(mutating: base), bytes.count)
        }
    }
}
