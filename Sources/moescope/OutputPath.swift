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

    /// A folder files are written into (created if missing): refused when the path is a file.
    static func checkFolder(_ path: String, option: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw CLIError("\(option) \(path) is a file, not a folder — name a folder to write into")
        }
    }
}
