import Foundation
import MoECore
import MoEHub

/// A recorded routing trace opened for a command, with the tokenizer it names: a Hugging Face
/// tokenizer.json, else moescope's own; without one, tokens show as their ids.
struct RecordedTrace {
    let file: RoutingTraceFile
    let tokenizer: any TextTokenizer

    init(path: String) throws {
        file = try RoutingTraceFile(path: path)
        if let tokenizerPath = file.tokenizerPath {
            if let hub = try? HubTokenizer(file: tokenizerPath) {
                tokenizer = hub
            } else {
                tokenizer = try Tokenizer.load(path: tokenizerPath)
            }
        } else {
            tokenizer = TokenIDsOnly()
        }
    }
}
