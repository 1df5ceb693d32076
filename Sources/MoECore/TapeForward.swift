/// The model's forward pass written on a `Tape`, for training: B sequences of T tokens at once,
/// laid out as [B·T × d] rows. It computes what `MoEModel.forward(_:cache:)` computes for each
/// sequence (a test holds the two equal), but every step is a differentiable op, so the
/// trainer back-propagates through attention, the routers and the sparse dispatch alike.
public struct TapeForward {
    /// Next-token logits, [B·T × vocab].
    public var logits: Variable
    /// Per layer: how the batch was routed.
    public var routing: [TapeRouting]
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

extension MoEModel {
    /// `tokens`: B·T ids, `sequenceLength` (T) per sequence. `parameter` gives the tape variable
    /// of each parameter by checkpoint name; the model supplies only its structure (config,
    /// router kind, RoPE tables), so the trainer can keep its parameters wherever it likes.
    public func forward(batch tokens: [Int], sequenceLength: Int, on tape: Tape,
                        parameter: (String) -> Variable) -> TapeForward {
        precondition(tokens.count % sequenceLength == 0 && sequenceLength <= config.contextLength)
        let heads = config.numHeads, eps = config.normEpsilon
        let embedding = parameter("model.embed_tokens.weight")
        var x = tape.gatherRows(embedding, tokens)
        var routerState: Variable?
        var routing: [TapeRouting] = []
        for i in 0..<config.numLayers {
            let p = "model.layers.\(i)"
            let h = tape.rmsNorm(x, gain: parameter("\(p).input_layernorm.weight"), epsilon: eps)
            let q = tape.rope(tape.linear(h, parameter("\(p).self_attn.q_proj.weight")), rope, numHeads: heads, sequenceLength: sequenceLength)
            let k = tape.rope(tape.linear(h, parameter("\(p).self_attn.k_proj.weight")), rope, numHeads: heads, sequenceLength: sequenceLength)
            let v = tape.linear(h, parameter("\(p).self_attn.v_proj.weight"))
            let attended = tape.causalAttention(q: q, k: k, v: v, numHeads: heads, sequenceLength: sequenceLength)
            x = tape.add(x, tape.linear(attended, parameter("\(p).self_attn.o_proj.weight")))

            let u = tape.rmsNorm(x, gain: parameter("\(p).post_attention_layernorm.weight"), epsilon: eps)
            let logits = router.logits(u, tokens: tokens, layer: i, state: &routerState, on: tape, parameter: parameter)
            let (moeOut, layerRouting) = sparseMixture(u, logits: logits, layer: i, on: tape, parameter: parameter)
            routing.append(layerRouting)
            x = tape.add(x, moeOut)
        }
        let normed = tape.rmsNorm(x, gain: parameter("model.norm.weight"), epsilon: eps)
        let head = parameter(config.tieEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight")
        return TapeForward(logits: tape.linear(normed, head), routing: routing)
    }

    /// The MoE block on the tape: p = softmax(logits), top-k, renormalised weights, and
    /// y_t = Σ_e w_te · SwiGLU_e(u_t), each expert run once on the rows routed to it (dropless).
    func sparseMixture(_ u: Variable, logits: Variable, layer: Int, on tape: Tape,
                       parameter: (String) -> Variable) -> (Variable, TapeRouting) {
        let k = config.topK, rows = tape.value(u).rows
        let probabilities = tape.softmaxRows(logits)
        let probabilityValues = tape.value(probabilities)
        let choices = (0..<rows).map { MoECore.topK(probabilityValues.row($0), k: k) }
        // Chosen probabilities in (token, slot) order, renormalised over each token's k slots.
        let weights = tape.normalizeGroups(
            tape.gatherEntries(probabilities, choices.enumerated().flatMap { t, chosen in chosen.map { (row: t, column: $0) } }),
            groupSize: k)
        var slotsOfExpert = [[Int]](repeating: [], count: config.numExperts)   // slot index t·k + j
        for (t, chosen) in choices.enumerated() { for (j, e) in chosen.enumerated() { slotsOfExpert[e].append(t * k + j) } }

        var output: Variable?
        for (e, slots) in slotsOfExpert.enumerated() where !slots.isEmpty {
            let prefix = "model.layers.\(layer).block_sparse_moe.experts.\(e)"
            let tokenRows = slots.map { $0 / k }
            let input = tape.gatherRows(u, tokenRows)
            let hidden = tape.swiglu(gate: tape.linear(input, parameter("\(prefix).w1.weight")),
                                     up: tape.linear(input, parameter("\(prefix).w3.weight")))
            let expertOut = tape.linear(hidden, parameter("\(prefix).w2.weight"))
            let slotWeights = tape.gatherEntries(weights, slots.map { (row: 0, column: $0) })
            let contribution = tape.weightedScatterRows(expertOut, weights: slotWeights, rows: tokenRows, count: rows)
            output = output.map { tape.add($0, contribution) } ?? contribution
        }
        return (output!, TapeRouting(logits: logits, probabilities: probabilities, choices: choices))
    }
}
