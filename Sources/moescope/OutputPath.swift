import Foundation

/// Where a command will write a file, checked before any work is done, so a bad path costs
/// one line instead of a run and a Foundation error dump. Writes go through a temporary file
/// renamed over the target, which would replace a device or FIFO with a regular file: only a
/// regular file, or a new name in an existing folder, is accepted.
enum OutputPath {
    static func check(_ path: String, option: String) throws {
        var info = stat()
        if stat(path, &info) == 0 {
            switch info.st_mode & S_IFMT {
            case S_IFREG: return
            case S_IFDIR: throw CLIError("\(option) \(path) is a directory — name a file to write")
            default: throw CLIError("\(option) \(path) is not a regular file (a device, FIFO or socket) — name a regular file to write")
            }
        }
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CLIError("\(option) \(path): the folder \(folder) does not exist — create it first or name a file in an existing folder")
        }
    }

    /// A folder files are written into, created later if missing: refused now when it is a
    /// file, or when the nearest path above it that exists is a file (it could never be created).
    static func checkFolder(_ path: String, option: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw CLIError("\(option) \(path) is a file, not a folder — name a folder to write into") }
            return
        }
        var ancestor = URL(fileURLWithPath: path).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: ancestor.path, isDirectory: &isDirectory) { ancestor.deleteLastPathComponent() }
        guard isDirectory.boolValue else {
            throw CLIError("cannot create \(option) \(path): \(ancestor.path) is a file, not a folder — choose another path")
        }
    }

    /// Creates `path` and every missing folder above it, one `mkdir` each, so a failure names
    /// the folder and the system's reason (Foundation's createDirectory says "The file doesn't
    /// exist" for a folder it cannot create).
    static func createFolder(_ path: String, option: String) throws {
        var missing: [String] = []
        var folder = URL(fileURLWithPath: path).standardizedFileURL
        while !FileManager.default.fileExists(atPath: folder.path) {
            missing.insert(folder.path, at: 0)
            folder.deleteLastPathComponent()
        }
        for created in missing where mkdir(created, 0o755) != 0 && errno != EEXIST {
            throw CLIError(
                "cannot create \(option) \(path): \(created): \(String(cString: strerror(errno))) — choose a folder you can write to")
        }
    }

    /// A folder the command reads from: it must exist and be a folder.
    static func checkInputFolder(_ path: String, option: String, holds: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CLIError("\(option) \(path) is not a folder — pass the folder that holds \(holds)")
        }
    }
}
