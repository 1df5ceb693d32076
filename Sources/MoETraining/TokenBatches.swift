import MoECore

/// The training stream: every document of a split, tokenised and joined with the end-of-text
/// token, from which batches of windows are drawn.
public struct TokenStream: Sendable {
    public let tokens: [Int]

    public init(tokens: [Int]) { self.tokens = tokens }

    public init(documents: [CorpusDocument], tokenizer: Tokenizer) {
        var all: [Int] = []
        for document in documents {
            all += tokenizer.encode(document.text)
            if let separator = tokenizer.endOfTextID { all.append(separator) }
        }
        tokens = all
    }

    /// B windows of T + 1 tokens for training step `step`: inputs are the first T of each, targets
    /// the last T. The offsets come from a generator seeded by (seed, step) alone, so a resumed
    /// run sees exactly the batches an uninterrupted one would.
    public func batch(step: Int, seed: UInt64, batchSize: Int, sequenceLength: Int) -> (inputs: [Int], targets: [Int]) {
        precondition(tokens.count > sequenceLength + 1, "the stream is shorter than one window")
        var generator = SeededGenerator(seed: seed &* 0x2545_F491_4F6C_DD1D ^ UInt64(step))
        var inputs: [Int] = []
        var targets: [Int] = []
        inputs.reserveCapacity(batchSize * sequenceLength)
        targets.reserveCapacity(batchSize * sequenceLength)
        for _ in 0..<batchSize {
            let start = Int(generator.next() % UInt64(tokens.count - sequenceLength - 1))
            inputs += tokens[start..<start + sequenceLength]
            targets += tokens[start + 1...start + sequenceLength]
        }
        return (inputs, targets)
    }
}
