/// Hash router (Roller et al. 2021, "Hash Layers For Large Sparse Models"), one of the
/// baselines compared by Harvey et al. 2025. No parameters: each (token id, layer) pair is sent
/// to a fixed set of k distinct experts drawn from a hash, with uniform weights 1/k.
///
///     experts(t, i) = k distinct draws from hash(token id t, layer i);  w = 1/k
///
/// Expressed as logits, the choice is 0 for the chosen experts and −∞ elsewhere, so the shared
/// softmax / top-k / renormalise step yields exactly the one-hot mixture (p = 1/k on the set).
public struct HashRouter: Router {
    public var kind: RouterKind { .hash }
    let numExperts: Int
    let topK: Int

    public init(_ config: ModelConfig) {
        numExperts = config.numExperts
        topK = config.topK
    }

    public mutating func visitParameters(_ visit: (inout Parameter) throws -> Void) rethrows {}

    /// The k experts of `token` at `layer`, in draw order. A pure function of its inputs.
    public func experts(token: Int, layer: Int) -> [Int] {
        var generator = SeededGenerator(seed: UInt64(truncatingIfNeeded: token) &* 0x100_0000_01B3 ^ UInt64(layer) &* 0x9E37_79B9)
        var pool = Array(0..<numExperts)
        var chosen: [Int] = []
        for _ in 0..<topK {
            let index = Int(generator.next() % UInt64(pool.count))
            chosen.append(pool.remove(at: index))
        }
        return chosen
    }

    public func logits(
        _ u: Variable, tokens: [Int], layer: Int, state: inout Variable?,
        on tape: Tape, parameter: (Parameter) -> Variable
    ) -> Variable {
        var none = RouterDepthState()
        return tape.leaf(logits(tape.value(u), tokens: tokens, layer: layer, state: &none, threads: 1))  // a constant: nothing to learn
    }

    public var expertCount: Int { numExperts }

    /// 0 on each token's k experts, −∞ elsewhere.
    public func logits(
        _ u: Tensor, tokens: [Int], layer: Int, state: inout RouterDepthState, into out: UnsafeMutablePointer<Float>, threads: Int
    ) {
        out.update(repeating: -.infinity, count: tokens.count * numExperts)
        for (t, token) in tokens.enumerated() {
            for e in experts(token: token, layer: layer) { out[t * numExperts + e] = 0 }
        }
    }
}
