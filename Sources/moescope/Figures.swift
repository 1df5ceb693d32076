import Foundation
import MoEAnalysis
import MoECore

extension AnalysisFigures {
    /// Writes the figures, reporting where on stderr; a folder that cannot be written is one line.
    func writeForCommandLine(to directory: String) throws {
        do {
            let written = try write(to: directory)
            printError("analyze: wrote \(written.count) figures to \(directory)")
        } catch {
            throw CLIError("cannot write figures to \(directory): \(systemReason(error)) — pass a folder you can write to")
        }
    }
}
