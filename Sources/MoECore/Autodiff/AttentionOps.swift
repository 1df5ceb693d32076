extension Tape {
    /// RoPE on x [B·T × d]: row r sits at position r mod T.
    public func rope(_ x: Variable, _ rope: RotaryEmbedding, numHeads: Int, sequenceLength: Int) -> Variable {
        var y = value(x)
        let d = y.cols, rows = y.rows
        y.scalars.withUnsafeMutableBufferPointer { p in
            for r in 0..<rows { rope.apply(p.baseAddress! + r * d, numHeads: numHeads, position: r % sequenceLength) }
        }
        return record(y) { g, tape in
            var dx = g
            dx.scalars.withUnsafeMutableBufferPointer { p in
                for r in 0..<rows { rope.apply(p.baseAddress! + r * d, numHeads: numHeads, position: r % sequenceLength, inverse: true) }
            }
            tape.accumulate(x, dx)
        }
    }

    /// Causal multi-head attention over B sequences of length T laid out as [B·T × d]
    /// (q, k, v already projected and rotated): O = softmax(QKᵀ/√D + causal mask) V per head.
    public func causalAttention(q: Variable, k: Variable, v: Variable, numHeads: Int, sequenceLength t: Int) -> Variable {
        let qv = value(q), kv = value(k), vv = value(v)
        let d = qv.cols, headDim = d / numHeads, sequences = qv.rows / t
        let scale = 1 / Float(headDim).squareRoot()
        // probabilities[b][h][i][j], j ≤ i, kept for the backward pass
        var probabilities = [Float](repeating: 0, count: sequences * numHeads * t * t)
        var out = Tensor(zeros: qv.shape)
        qv.scalars.withUnsafeBufferPointer { qp in kv.scalars.withUnsafeBufferPointer { kp in vv.scalars.withUnsafeBufferPointer { vp in
            out.scalars.withUnsafeMutableBufferPointer { op in probabilities.withUnsafeMutableBufferPointer { pp in
                for b in 0..<sequences { for h in 0..<numHeads {
                    let offset = h * headDim
                    for i in 0..<t {
                        let row = pp.baseAddress! + ((b * numHeads + h) * t + i) * t
                        let qRow = qp.baseAddress! + (b * t + i) * d + offset
                        for j in 0...i { row[j] = Kernels.dot(qRow, kp.baseAddress! + (b * t + j) * d + offset, count: headDim) * scale }
                        Kernels.softmax(row, count: i + 1)
                        let o = op.baseAddress! + (b * t + i) * d + offset
                        for j in 0...i { Kernels.axpy(row[j], vp.baseAddress! + (b * t + j) * d + offset, o, count: headDim) }
                    }
                } }
            } }
        } } }
        return record(out) { g, tape in
            var dq = Tensor(zeros: qv.shape), dk = Tensor(zeros: kv.shape), dv = Tensor(zeros: vv.shape)
            var dScores = [Float](repeating: 0, count: t)
            g.scalars.withUnsafeBufferPointer { gp in qv.scalars.withUnsafeBufferPointer { qp in
                kv.scalars.withUnsafeBufferPointer { kp in vv.scalars.withUnsafeBufferPointer { vp in
                    dq.scalars.withUnsafeMutableBufferPointer { dqp in dk.scalars.withUnsafeMutableBufferPointer { dkp in
                        dv.scalars.withUnsafeMutableBufferPointer { dvp in probabilities.withUnsafeBufferPointer { pp in
                            for b in 0..<sequences { for h in 0..<numHeads {
                                let offset = h * headDim
                                for i in 0..<t {
                                    let row = pp.baseAddress! + ((b * numHeads + h) * t + i) * t
                                    let gRow = gp.baseAddress! + (b * t + i) * d + offset
                                    // dP_ij = dO_i · V_j ; dV_j += P_ij dO_i
                                    var weighted: Float = 0
                                    for j in 0...i {
                                        let vRow = vp.baseAddress! + (b * t + j) * d + offset
                                        dScores[j] = Kernels.dot(gRow, vRow, count: headDim)
                                        weighted += dScores[j] * row[j]
                                        Kernels.axpy(row[j], gRow, dvp.baseAddress! + (b * t + j) * d + offset, count: headDim)
                                    }
                                    // dS_ij = P_ij (dP_ij − Σ_j P_ij dP_ij); dQ_i += dS_ij K_j / √D; dK_j += dS_ij Q_i / √D
                                    let qRow = qp.baseAddress! + (b * t + i) * d + offset
                                    for j in 0...i {
                                        let ds = row[j] * (dScores[j] - weighted) * scale
                                        Kernels.axpy(ds, kp.baseAddress! + (b * t + j) * d + offset, dqp.baseAddress! + (b * t + i) * d + offset, count: headDim)
                                        Kernels.axpy(ds, qRow, dkp.baseAddress! + (b * t + j) * d + offset, count: headDim)
                                    }
                                }
                            } }
                        } }
                    } }
                } }
            } }
            tape.accumulate(q, dq); tape.accumulate(k, dk); tape.accumulate(v, dv)
        }
    }
}
