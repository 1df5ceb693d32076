import Foundation
import MoEAnalysis
import MoECore

/// Writes figures into `directory`, created first so a folder that cannot be made is named,
/// and reports what `write` says it wrote on stderr; any failure is one line.
func writeFigures(into directory: String, by command: String, _ write: () throws -> String) throws {
    try OutputPath.createFolder(directory, option: "--figures")
    do {
        printError("\(command): wrote \(try write())")
    } catch {
        throw CLIError("cannot write figures to \(directory): \(systemReason(error)) — pass a folder you can write to")
    }
}

extension AnalysisFigures {
    func writeForCommandLine(to directory: String) throws {
        try writeFigures(into: directory, by: "analyze") { "\(try write(to: directory).count) figures to \(directory)" }
    }
}
