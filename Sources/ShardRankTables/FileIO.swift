#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif

private func posixRename(_ from: String, _ to: String) -> Int32 { rename(from, to) }

/// The system-call adapters of this module: one function per call, `errno` turned into a thrown
/// `TableError(.io)` naming the path.
enum FileIO {
    static func errnoMessage(_ what: String, _ err: Int32 = errno) -> String {
        "\(what) failed: \(String(cString: strerror(err))) (errno \(err))"
    }

    static func openReadOnly(_ path: String) throws -> Int32 {
        while true {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            if fd >= 0 { return fd }
            if errno == EINTR { continue }
            let err = errno
            throw TableError(err == ENOENT ? .notFound : .io, errnoMessage("open", err), path: path)
        }
    }

    static func fileSize(_ fd: Int32, path: String) throws -> Int {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw TableError(.io, errnoMessage("fstat"), path: path) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw TableError(.io, "not a regular file", path: path) }
        return Int(st.st_size)
    }

    static func exists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Names in a directory (without `.` and `..`).
    static func listDirectory(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else {
            let err = errno
            throw TableError(err == ENOENT ? .notFound : .io, errnoMessage("opendir", err), path: path)
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// `mkdir -p`.
    static func makeDirectories(_ path: String) throws {
        if isDirectory(path) { return }
        let parent = parentDirectory(path)
        if parent != path && !parent.isEmpty { try makeDirectories(parent) }
        if mkdir(path, 0o755) != 0 && errno != EEXIST {
            throw TableError(.io, errnoMessage("mkdir"), path: path)
        }
    }

    /// `mkdir` that reports whether it created the directory (false: it already existed).
    static func makeDirectoryExclusive(_ path: String) throws -> Bool {
        if mkdir(path, 0o755) == 0 { return true }
        if errno == EEXIST { return false }
        throw TableError(.io, errnoMessage("mkdir"), path: path)
    }

    static func parentDirectory(_ path: String) -> String {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        guard let slash = p.lastIndex(of: "/") else { return "." }
        if slash == p.startIndex { return "/" }
        return String(p[..<slash])
    }

    /// fsync of a directory, so that renames inside it are durable.
    static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw TableError(.io, errnoMessage("open directory"), path: path) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw TableError(.io, errnoMessage("fsync directory"), path: path) }
    }

    static func rename(_ from: String, _ to: String) throws {
        guard posixRename(from, to) == 0 else { throw TableError(.io, errnoMessage("rename to \(to)"), path: from) }
    }

    /// Removes a directory tree (best effort; used to discard an unpublished version).
    static func removeTree(_ path: String) {
        if isDirectory(path) {
            for name in (try? listDirectory(path)) ?? [] { removeTree(path + "/" + name) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    /// Reads a whole (small) file.
    static func readFile(_ path: String) throws -> [UInt8] {
        let fd = try openReadOnly(path)
        defer { close(fd) }
        let size = try fileSize(fd, path: path)
        var bytes = [UInt8](repeating: 0, count: size)
        var done = 0
        try bytes.withUnsafeMutableBytes { buf in
            while done < size {
                let n = pread(fd, buf.baseAddress! + done, size - done, off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw TableError(.io, errnoMessage("read"), path: path)
                }
                if n == 0 { break }
                done += n
            }
        }
        if done < size { bytes.removeLast(size - done) }
        return bytes
    }

    /// Writes `bytes` to `path` durably: `path.tmp-PID` → write → fsync → rename. The caller
    /// fsyncs the directory when the rename must be durable.
    static func writeFileAtomically(_ path: String, _ bytes: [UInt8]) throws {
        let w = try DurableFileWriter(finalPath: path)
        try bytes.withUnsafeBytes { try w.write($0, at: 0) }
        try w.commit()
    }
}
