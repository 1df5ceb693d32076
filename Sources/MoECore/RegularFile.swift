import Foundation

/// Why a path given to moescope could not be read as a file, in one line.
public struct FileError: Error, CustomStringConvertible, Equatable {
    public let path: String
    /// What the file was meant to be ("model config", "text file").
    public let what: String
    public let reason: String
    public let remedy: String
    public var description: String { "cannot read \(what) \(path): \(reason) — \(remedy)" }
}

/// Opening only regular files: a FIFO would block the open (or the read) forever, a device
/// would be read without end, and a directory cannot be read at all. Each is refused by its
/// kind, checked with stat() before anything is opened, and re-checked on the open descriptor.
public enum RegularFile {
    /// What kind of thing is at `path`, worded for an error; nil for a regular file.
    static func problem(_ mode: mode_t) -> String? {
        switch mode & S_IFMT {
        case S_IFREG: return nil
        case S_IFDIR: return "it is a directory, not a file"
        case S_IFIFO: return "it is a FIFO (named pipe), not a regular file"
        case S_IFCHR, S_IFBLK: return "it is a device, not a regular file"
        case S_IFSOCK: return "it is a socket, not a regular file"
        default: return "it is not a regular file"
        }
    }

    /// Throws unless `path` is a regular file; returns its size.
    @discardableResult
    public static func check(_ path: String, what: String, remedy: String = "check the path") throws -> Int {
        var info = stat()
        guard stat(path, &info) == 0 else {
            let reason = errno == ENOENT ? "no such file" : String(cString: strerror(errno))
            throw FileError(path: path, what: what, reason: reason, remedy: remedy)
        }
        if let problem = problem(info.st_mode) {
            throw FileError(
                path: path, what: what, reason: problem, remedy: remedy == "check the path" ? "point at a regular file" : remedy)
        }
        return Int(info.st_size)
    }

    /// Opens `path` for reading, non-blocking, once it is known to be a regular file. The
    /// caller closes the descriptor.
    public static func open(_ path: String, what: String, remedy: String = "check the path") throws -> (fd: Int32, size: Int) {
        try check(path, what: what, remedy: remedy)
        let fd = Glibc.open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw FileError(path: path, what: what, reason: String(cString: strerror(errno)), remedy: remedy) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw FileError(path: path, what: what, reason: reason, remedy: remedy)
        }
        if let problem = problem(info.st_mode) {  // replaced between the two checks
            close(fd)
            throw FileError(path: path, what: what, reason: problem, remedy: remedy)
        }
        return (fd, Int(info.st_size))
    }

    /// The whole file, refused when it is larger than `limit` bytes.
    public static func read(_ path: String, what: String, limit: Int, remedy: String = "check the path") throws -> Data {
        let (fd, size) = try open(path, what: what, remedy: remedy)
        defer { close(fd) }
        guard size <= limit else {
            throw FileError(
                path: path, what: what, reason: "it is \(size) bytes, more than the \(limit) a \(what) may have", remedy: remedy)
        }
        var data = Data(count: size)
        var done = 0
        let failure: String? = data.withUnsafeMutableBytes { buffer in
            while done < size {
                let n = Glibc.read(fd, buffer.baseAddress! + done, size - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    return String(cString: strerror(errno))
                }
                if n == 0 { break }
                done += n
            }
            return nil
        }
        if let failure { throw FileError(path: path, what: what, reason: failure, remedy: remedy) }
        return data.prefix(done)
    }
}
