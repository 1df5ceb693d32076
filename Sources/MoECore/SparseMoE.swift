/// SwiGLU feed-forward network, y = down(SiLU(gate x) ⊙ up x): a routed expert (Mixtral's w1,
/// w3, w2), a shared expert or a dense layer's MLP.
public struct SwiGLU<P: Projection>: Sendable {
    public var gate, up, down: P

    public init(gate: P, up: P, down: P) { (self.gate, self.up, self.down) = (gate, up, down) }

    public func callAsFunction(_ x: Tensor, threads: Int = Kernels.threads) -> Tensor {
        let projected = P.apply([(gate, x), (up, x)], threads: threads)
        return P.apply([(down, Kernels.swiglu(gate: projected[0], up: projected[1]))], threads: threads)[0]
    }
}

extension SwiGLU: ParameterDeclaring where P == Linear {
    /// moescope's expert, `prefix`.w1/w3/w2; the down projection starts scaled by depth.
    public init(_ prefix: String, config: ModelConfig) {
        let d = config.hiddenSize
        let h = config.expertHiddenSize
        let std = config.initStd
        self.init(
            gate: Linear("\(prefix).w1.weight", in: d, out: h, std: std),
            up: Linear("\(prefix).w3.weight", in: d, out: h, std: std),
            down: Linear("\(prefix).w2.weight", in: h, out: d, std: std / (2 * Float(config.numLayers)).squareRoot()))
    }

    /// Gate, down, up: the order seeded models have always drawn them in.
    public mutating func visitParameters(_ visit: (inout Parameter) throws -> Void) rethrows {
        for keyPath in [\Self.gate, \.down, \.up] { try self[keyPath: keyPath].visitParameters(visit) }
    }
}

/// How router logits become k experts and their mixture weights, as each family's
/// transformers code does it.
public enum RoutingRule: Sendable, Equatable {
    /// p = softmax(logits); the top k of p; weights p renormalised over the k when `normalize`
    /// (Mixtral, Qwen, OLMoE, and moescope's own routers).
    case softmaxTopK(normalize: Bool)
    /// DeepSeek-V2: p = softmax(logits); with `groupLimited`, only the `topGroups` groups whose
    /// best expert scores highest are eligible; weights p · scale.
    case deepseekV2(groupLimited: Bool, groups: Int, topGroups: Int, scale: Float)
    /// DeepSeek-V3: s = sigmoid(logits); choice by s + bias among the `topGroups` groups with
    /// the largest sum of their two best; weights s (renormalised when `normalize`) · scale.
    case deepseekV3(groups: Int, topGroups: Int, normalize: Bool, scale: Float)
}

/// Top-k of one probability row: indices by descending probability, ties to the lower index.
public func topK(_ probabilities: ArraySlice<Float>, k: Int) -> [Int] {
    var chosen = [Int32](repeating: -1, count: k)
    probabilities.withUnsafeBufferPointer { p in
        chosen.withUnsafeMutableBufferPointer { topK(p.baseAddress, count: p.count, k: k, into: $0.baseAddress!) }
    }
    return chosen.map { Int($0) }
}

/// `topK` of the `count` floats at `p` into `chosen` [k], with no array (a batch's rows in place).
func topK(_ p: UnsafePointer<Float>?, count e: Int, k: Int, into chosen: UnsafeMutablePointer<Int32>) {
    for slot in 0..<k {
        var best = -1
        for i in 0..<e where !(0..<slot).contains(where: { chosen[$0] == Int32(i) }) {
            if best < 0 || p![i] > p![best] { best = i }
        }
        chosen[slot] = Int32(best)
    }
}

/// Softmax top-k (`RoutingRule.softmaxTopK`) of one row in place: the `count` logits at `p`
/// become probabilities, the k best go to `chosen`, and their probabilities, renormalised to
/// sum 1 when `normalize`, to `weights`.
func softmaxTopK(
    _ p: UnsafeMutablePointer<Float>, count e: Int, k: Int, normalize: Bool, chosen: UnsafeMutablePointer<Int32>,
    weights: UnsafeMutablePointer<Float>
) {
    Kernels.softmax(p, count: e)
    topK(p, count: e, k: k, into: chosen)
    var total: Float = 0
    for slot in 0..<k {
        weights[slot] = p[Int(chosen[slot])]
        total += weights[slot]
    }
    if normalize { for slot in 0..<k { weights[slot] /= total } }
}

/// The sparse feed-forward block: route by `rule`, then send each token to its k experts
/// (dropless: every expert takes all the tokens routed to it, as one batched product), plus an
/// always-on shared expert where the family has one (Qwen2-MoE gates it by σ(u·w)).
public struct SparseMoE<P: Projection>: Sendable {
    public var experts: [SwiGLU<P>]
    public var topK: Int
    public var rule: RoutingRule
    /// DeepSeek-V3's selection bias [E], added to the scores only to choose experts.
    public var selectionBias: Parameter?
    public var shared: SwiGLU<P>?
    /// [1 × d]: Qwen2-MoE's gate on the shared expert.
    public var sharedGate: Parameter?

    /// Without a shared expert; a checkpoint's block declares one (HubDeclaration.swift).
    public init(experts: [SwiGLU<P>], topK: Int, rule: RoutingRule, selectionBias: Tensor? = nil) {
        (self.experts, self.topK, self.rule) = (experts, topK, rule)
        self.selectionBias = selectionBias.map { Parameter("", value: $0) }
    }

    /// One token's routing from its router logits, by `rule`: the k experts (best first), their
    /// mixture weights, the distribution shown as "probabilities" (for the sigmoid rule, the
    /// scores normalised to sum to 1), the scores the choice ranked, and — for group-limited
    /// rules, whose ranking the probabilities do not show — the selection margin on those
    /// scores (see `rankedScoreMargin`).
    public func route(_ logits: [Float], rule: RoutingRule, k: Int)
        -> (experts: [Int], weights: [Float], probabilities: [Float], selection: [Float], margin: Double?)
    {
        let e = logits.count
        func softmaxed() -> [Float] {
            var p = logits
            p.withUnsafeMutableBufferPointer { Kernels.softmax($0.baseAddress!, count: e) }
            return p
        }
        /// Each group's score (groups are consecutive runs of e/groups experts) and the `top` best.
        func rankGroups(_ scores: [Float], groups: Int, top: Int, groupScore: ([Float]) -> Float) -> (scores: [Float], kept: Set<Int>) {
            let size = e / groups
            let ranked = (0..<groups).map { g in groupScore(Array(scores[g * size..<(g + 1) * size])) }
            return (ranked, Set(MoECore.topK(ranked[...], k: top)))
        }
        switch rule {
        case .softmaxTopK(let normalize):
            var (p, chosen, w) = (logits, [Int32](repeating: -1, count: k), [Float](repeating: 0, count: k))
            p.withUnsafeMutableBufferPointer { p in
                chosen.withUnsafeMutableBufferPointer { c in
                    w.withUnsafeMutableBufferPointer {
                        softmaxTopK(p.baseAddress!, count: e, k: k, normalize: normalize, chosen: c.baseAddress!, weights: $0.baseAddress!)
                    }
                }
            }
            return (chosen.map { Int($0) }, w, p, p, nil)
        case .deepseekV2(let groupLimited, let groups, let topGroups, let scale):
            let p = softmaxed()
            guard groupLimited else {
                let chosen = MoECore.topK(p[...], k: k)
                return (chosen, chosen.map { p[$0] * scale }, p, p, nil)
            }
            var selection = p
            let ranked = rankGroups(p, groups: groups, top: topGroups) { $0.max()! }
            for i in 0..<e where !ranked.kept.contains(i / (e / groups)) { selection[i] = 0 }
            let chosen = MoECore.topK(selection[...], k: k)
            let margin = Self.rankedScoreMargin(scores: p, chosen: chosen, groupScores: ranked.scores, keptGroups: ranked.kept)
            return (chosen, chosen.map { p[$0] * scale }, p, selection, margin)
        case .deepseekV3(let groups, let topGroups, let normalize, let scale):
            let scores = logits.map(Kernels.sigmoid)
            let biased = zip(scores, selectionBias?.value.scalars ?? [Float](repeating: 0, count: e)).map(+)
            var selection = biased
            let ranked = rankGroups(biased, groups: groups, top: topGroups) { $0.sorted(by: >).prefix(2).reduce(0, +) }
            for i in 0..<e where !ranked.kept.contains(i / (e / groups)) { selection[i] = -.infinity }
            let chosen = MoECore.topK(selection[...], k: k)
            var w = chosen.map { scores[$0] }
            if normalize {
                let total = w.reduce(0, +) + 1e-20
                w = w.map { $0 / total }
            }
            let total = scores.reduce(0, +)
            let margin = Self.rankedScoreMargin(scores: biased, chosen: chosen, groupScores: ranked.scores, keptGroups: ranked.kept)
            return (chosen, w.map { $0 * scale }, scores.map { $0 / total }, selection, margin)
        }
    }

    /// The selection margin of a group-limited choice, on the scores it ranked (DeepSeek-V3: the
    /// sigmoid scores plus the selection bias; V2: the softmax probabilities): the smaller of
    ///   expert gap  min_{i chosen} s_i − max_{j unchosen, j in a kept group} s_j,
    ///   group gap   min_{g kept} G_g − max_{h not kept} G_h   (G: the rule's group score),
    /// each left out where it has no second term. Each is the smallest change of the ranked
    /// scores that reorders that stage, so the minimum is where the rule's decision comes
    /// nearest to a tie (a group swap need not change the experts: it is a lower bound). Never
    /// negative for a choice this rule made; nil when nothing could have been chosen instead.
    static func rankedScoreMargin(scores: [Float], chosen: [Int], groupScores: [Float], keptGroups: Set<Int>) -> Double? {
        let size = scores.count / groupScores.count
        let weakestChosen = chosen.map { Double(scores[$0]) }.min() ?? .infinity
        var bestUnchosen = -Double.infinity
        for (i, s) in scores.enumerated() where keptGroups.contains(i / size) && !chosen.contains(i) {
            bestUnchosen = max(bestUnchosen, Double(s))
        }
        let weakestKept = keptGroups.map { Double(groupScores[$0]) }.min() ?? .infinity
        var bestDropped = -Double.infinity
        for (g, s) in groupScores.enumerated() where !keptGroups.contains(g) { bestDropped = max(bestDropped, Double(s)) }
        let margin = min(weakestChosen - bestUnchosen, weakestKept - bestDropped)
        return margin.isFinite ? margin : nil
    }

    /// How each token is routed, from router logits [T × E], without running an expert: the
    /// block's routing when nothing reads its output (the last layer's, where only the routing
    /// is analysed). `expertOutputNorms` is empty (no expert ran); `mix` fills it. The softmax
    /// top-k rule (moescope's own blocks, Mixtral, Qwen, OLMoE) runs on the flat rows in place,
    /// with no array a token; the others route row by row (`route`).
    public func routingTable(logits: Tensor) -> RoutingTable {
        let (t, e, k) = (logits.rows, logits.cols, topK)
        var table = RoutingTable(
            count: t, numExperts: e, topK: k, probabilities: logits.scalars, experts: [Int32](repeating: 0, count: t * k),
            weights: [Float](repeating: 0, count: t * k))
        guard case .softmaxTopK(let normalize) = rule else {
            var margins = [Double?](repeating: nil, count: t)
            for r in 0..<t {
                let routed = route(Array(logits.row(r)), rule: rule, k: k)
                table.probabilities.replaceSubrange(r * e..<(r + 1) * e, with: routed.probabilities)
                for slot in 0..<k {
                    table.experts[r * k + slot] = Int32(routed.experts[slot])
                    table.weights[r * k + slot] = routed.weights[slot]
                }
                margins[r] = routed.margin
            }
            table.rankedScoreMargins = margins
            return table
        }
        table.probabilities.withUnsafeMutableBufferPointer { pp in
            table.experts.withUnsafeMutableBufferPointer { ep in
                table.weights.withUnsafeMutableBufferPointer { wp in
                    for r in 0..<t {
                        softmaxTopK(
                            pp.baseAddress! + r * e, count: e, k: k, normalize: normalize, chosen: ep.baseAddress! + r * k,
                            weights: wp.baseAddress! + r * k)
                    }
                }
            }
        }
        return table
    }

    /// u: normed input [T × d]; logits: router output [T × E]. Returns the block output and how
    /// each token was routed (router-specific fields — timing, GRU state — the caller fills in).
    /// With `allExpertNorms`, every expert also runs on every token to record ‖SwiGLU_e(u)‖; the
    /// routed outputs are computed on the routed rows alone either way, so they do not depend on it.
    public func callAsFunction(
        _ u: Tensor, logits: Tensor, allExpertNorms: Bool = false,
        threads: Int = Kernels.threads
    ) -> (output: Tensor, routing: [LayerRouting]) {
        let (y, table) = mix(u, logits: logits, allExpertNorms: allExpertNorms, threads: threads)
        return (y, table.layerRoutings(logits: logits))
    }

    /// The block itself: `callAsFunction` with the routing left in its flat table.
    public func mix(_ u: Tensor, logits: Tensor, allExpertNorms: Bool = false, threads: Int = Kernels.threads) -> (
        output: Tensor, routing: RoutingTable
    ) {
        let t = u.rows
        let d = u.cols
        let e = experts.count
        let k = topK
        var routing = routingTable(logits: logits)
        var slotsOfExpert = [[(row: Int, slot: Int)]](repeating: [], count: e)
        for r in 0..<t {
            for slot in 0..<k { slotsOfExpert[Int(routing.experts[r * k + slot])].append((r, slot)) }
        }
        routing.expertOutputNorms = [Float](repeating: 0, count: t * k)
        if allExpertNorms {
            let outputs = P.applyMLPs(experts, experts.indices.map { $0 }, on: [Tensor](repeating: u, count: e), threads: threads)
            var norms = [Float](repeating: 0, count: t * e)
            for (expert, y) in outputs.enumerated() {
                y.scalars.withUnsafeBufferPointer { yp in
                    for r in 0..<t { norms[r * e + expert] = Kernels.sumOfSquares(yp.baseAddress! + r * d, count: d).squareRoot() }
                }
            }
            routing.allExpertOutputNorms = norms
        }
        // The chosen experts' rows, gathered per expert, and the shared expert on every row.
        let chosen = slotsOfExpert.indices.filter { !slotsOfExpert[$0].isEmpty }
        let inputs = chosen.map { expert in
            var input = Tensor(uninitialized: [slotsOfExpert[expert].count, d])
            for (i, s) in slotsOfExpert[expert].enumerated() { input.scalars.replaceSubrange(i * d..<(i + 1) * d, with: u.row(s.row)) }
            return input
        }
        // The experts are named by index in their own array, not copied out of it (a copy retains
        // every weight it holds); a shared expert joins the chosen ones in a list of their own.
        let outputs =
            shared.map { P.applyMLPs(chosen.map { experts[$0] } + [$0], Array(0...chosen.count), on: inputs + [u], threads: threads) }
            ?? P.applyMLPs(experts, chosen, on: inputs, threads: threads)
        var y = Tensor(zeros: [t, d])
        for (index, expert) in chosen.enumerated() {
            y.scalars.withUnsafeMutableBufferPointer { yp in
                outputs[index].scalars.withUnsafeBufferPointer { op in
                    for (i, s) in slotsOfExpert[expert].enumerated() {
                        let row = op.baseAddress! + i * d
                        routing.expertOutputNorms[s.row * k + s.slot] = Kernels.sumOfSquares(row, count: d).squareRoot()
                        Kernels.axpy(routing.weights[s.row * k + s.slot], row, yp.baseAddress! + s.row * d, count: d)
                    }
                }
            }
        }
        if shared != nil {
            var gates = Tensor(repeating: 1, shape: [t, 1])  // DeepSeek's shared experts are always on
            if let sharedGate {
                Tensor.product(u, transposed: false, sharedGate.value, transposed: true, into: &gates, accumulate: false, threads: 1)
                gates = gates.mapped(Kernels.sigmoid)
            }
            y.scalars.withUnsafeMutableBufferPointer { yp in
                outputs[chosen.count].scalars.withUnsafeBufferPointer { op in
                    for r in 0..<t { Kernels.axpy(gates.scalars[r], op.baseAddress! + r * d, yp.baseAddress! + r * d, count: d) }
                }
            }
        }
        return (y, routing)
    }

}

/// How a sparse block routed T tokens, in flat arrays (token t's k slots at t·k ..< t·k + k):
/// what a batched forward records, with no array a token (a long text's routing was millions of
/// small arrays, allocated by the workers and freed by the summarising thread).
public struct RoutingTable: Sendable {
    public let count, numExperts, topK: Int
    /// [T × E] the distribution shown as "probabilities" (`LayerRouting.probabilities`).
    public var probabilities: [Float]
    /// [T × k] the chosen experts, best first.
    public var experts: [Int32]
    /// [T × k] their mixture weights.
    public var weights: [Float]
    /// [T × k] ‖SwiGLU_e(u)‖ of each chosen expert; empty where no expert ran.
    public var expertOutputNorms: [Float] = []
    /// [T × E] every expert's output norm, when the block was asked for them.
    public var allExpertOutputNorms: [Float]?
    /// [T] `LayerRouting.rankedScoreMargin`; nil for rules that rank the probabilities themselves.
    public var rankedScoreMargins: [Double?]?

    /// Token t's routing as one value (`logits`: the router output the table was routed from).
    public func layerRouting(_ t: Int, logits: Tensor) -> LayerRouting {
        let (e, k) = (numExperts, topK)
        var entry = LayerRouting(
            logits: Array(logits.row(t)), probabilities: Array(probabilities[t * e..<(t + 1) * e]),
            experts: experts[t * k..<(t + 1) * k].map { Int($0) }, weights: Array(weights[t * k..<(t + 1) * k]),
            expertOutputNorms: expertOutputNorms.isEmpty ? [] : Array(expertOutputNorms[t * k..<(t + 1) * k]), gruHidden: nil,
            routerNanoseconds: 0)
        entry.allExpertOutputNorms = allExpertOutputNorms.map { Array($0[t * e..<(t + 1) * e]) }
        entry.rankedScoreMargin = rankedScoreMargins?[t]
        return entry
    }

    public func layerRoutings(logits: Tensor) -> [LayerRouting] { (0..<count).map { layerRouting($0, logits: logits) } }

    /// Token t's selection margin (`LayerRouting.selectionMargin`) read off the flat rows.
    public func selectionMargin(_ t: Int) -> Double? {
        if let margin = rankedScoreMargins?[t] { return margin }
        let (e, k) = (numExperts, topK)
        guard k > 0 else { return nil }
        var weakest = Double.infinity
        for slot in 0..<k { weakest = min(weakest, Double(probabilities[t * e + Int(experts[t * k + slot])])) }
        var unchosen = -Double.infinity
        for i in 0..<e where !(0..<k).contains(where: { experts[t * k + $0] == Int32(i) }) {
            unchosen = max(unchosen, Double(probabilities[t * e + i]))
        }
        return unchosen.isFinite ? weakest - unchosen : nil
    }
}

/// One layer's routing on the tape.
public struct TapeRouting {
    /// Router output, [B·T × E].
    public var logits: Variable
    /// softmax(logits), [B·T × E].
    public var probabilities: Variable
    /// Top-k experts of every row (constants: the choice itself has no gradient).
    public var choices: [[Int]]
}

extension SparseMoE: ParameterDeclaring where P == Linear {
    /// moescope's block: E experts named `model.layers.i.block_sparse_moe.experts.e`, softmax
    /// top-k renormalised (Mixtral). Its router is the model's (`Router`), declared there.
    public init(layer: Int, config: ModelConfig) {
        self.init(
            experts: (0..<config.numExperts).map { SwiGLU("model.layers.\(layer).block_sparse_moe.experts.\($0)", config: config) },
            topK: config.topK, rule: .softmaxTopK(normalize: true))
    }

    public mutating func visitParameters(_ visit: (inout Parameter) throws -> Void) rethrows {
        for e in experts.indices { try experts[e].visitParameters(visit) }
    }

    /// The same block on the tape, for training: p = softmax(logits), top-k, renormalised
    /// weights, and y_t = Σ_e w_te · SwiGLU_e(u_t), each expert run once on the rows routed to
    /// it (dropless).
    public func callAsFunction(
        _ u: Variable, logits: Variable, on tape: Tape,
        parameter: (Parameter) -> Variable
    ) -> (Variable, TapeRouting) {
        guard case .softmaxTopK(let normalize) = rule, shared == nil else { preconditionFailure("the tape runs moescope's own block") }
        let k = topK
        let rows = tape.value(u).rows
        let probabilities = tape.softmaxRows(logits)
        let probabilityValues = tape.value(probabilities)
        let choices = (0..<rows).map { MoECore.topK(probabilityValues.row($0), k: k) }
        // Chosen probabilities in (token, slot) order, renormalised over each token's k slots.
        let chosen = tape.gatherEntries(probabilities, choices.enumerated().flatMap { t, chosen in chosen.map { (row: t, column: $0) } })
        let weights = normalize ? tape.normalizeGroups(chosen, groupSize: k) : chosen
        var slotsOfExpert = [[Int]](repeating: [], count: experts.count)  // slot index t·k + j
        for (t, chosen) in choices.enumerated() { for (j, e) in chosen.enumerated() { slotsOfExpert[e].append(t * k + j) } }

        var output: Variable?
        for (e, slots) in slotsOfExpert.enumerated() where !slots.isEmpty {
            let expert = experts[e]
            let tokenRows = slots.map { $0 / k }
            let input = tape.gatherRows(u, tokenRows)
            let hidden = tape.swiglu(
                gate: tape.linear(input, parameter(expert.gate.weight)), up: tape.linear(input, parameter(expert.up.weight)))
            let expertOut = tape.linear(hidden, parameter(expert.down.weight))
            let slotWeights = tape.gatherEntries(weights, slots.map { (row: 0, column: $0) })
            let contribution = tape.weightedScatterRows(expertOut, weights: slotWeights, rows: tokenRows, count: rows)
            output = output.map { tape.add($0, contribution) } ?? contribution
        }
        return (output!, TapeRouting(logits: logits, probabilities: probabilities, choices: choices))
    }
}
