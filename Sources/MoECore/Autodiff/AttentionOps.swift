extension Tape {
    /// RoPE on x [B·T × d]: row r sits at position r mod T.
    public func rope(_ x: Variable, _ rope: RotaryEmbedding, numHeads: Int, sequenceLength: Int) -> Variable {
        var y = value(x)
        let d = y.cols
        let rows = y.rows
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
    /// Each (sequence, head) pair is a handful of T×T products on the packed kernel, reading
    /// its head's columns in place; pairs write disjoint blocks, so they run in parallel over
    /// the tape's `threads` with the same result as on one.
    public func causalAttention(q: Variable, k: Variable, v: Variable, numHeads: Int, sequenceLength t: Int) -> Variable {
        let qv = value(q)
        let kv = value(k)
        let vv = value(v)
        let d = qv.cols
        let headDim = d / numHeads
        let sequences = qv.rows / t
        let scale = 1 / Float(headDim).squareRoot()
        // Per pair, the T×T probabilities (zero above the diagonal), kept for the backward pass.
        // Every block below is written whole by its pair, so none needs zeroing first.
        var probabilities = [Float](unsafeUninitializedCapacity: sequences * numHeads * t * t) { $1 = $0.count }
        var out = Tensor(uninitialized: qv.shape)
        qv.scalars.withUnsafeBufferPointer { qp in
            kv.scalars.withUnsafeBufferPointer { kp in
                vv.scalars.withUnsafeBufferPointer { vp in
                    out.scalars.withUnsafeMutableBufferPointer { op in
                        probabilities.withUnsafeMutableBufferPointer { pp in
                            Kernels.parallelFor(sequences * numHeads, threads: threads) { pair in
                                let (b, h) = pair.quotientAndRemainder(dividingBy: numHeads)
                                let offset = b * t * d + h * headDim
                                Kernels.causalAttention(
                                    count: t, offset: 0, queries: .init(qp.baseAddress! + offset, leadingDimension: d),
                                    keys: .init(kp.baseAddress! + offset, leadingDimension: d),
                                    values: .init(vp.baseAddress! + offset, leadingDimension: d),
                                    dims: headDim, valueDims: headDim, scale: scale, scores: pp.baseAddress! + pair * t * t,
                                    into: op.baseAddress! + offset, ldo: d)
                            }
                        }
                    }
                }
            }
        }
        return record(out) { g, tape in
            var dq = Tensor(uninitialized: qv.shape)
            var dk = Tensor(uninitialized: kv.shape)
            var dv = Tensor(uninitialized: vv.shape)
            g.scalars.withUnsafeBufferPointer { gp in
                qv.scalars.withUnsafeBufferPointer { qp in
                    kv.scalars.withUnsafeBufferPointer { kp in
                        vv.scalars.withUnsafeBufferPointer { vp in
                            dq.scalars.withUnsafeMutableBufferPointer { dqp in
                                dk.scalars.withUnsafeMutableBufferPointer { dkp in
                                    dv.scalars.withUnsafeMutableBufferPointer { dvp in
                                        probabilities.withUnsafeBufferPointer { pp in
                                            Kernels.parallelFor(sequences * numHeads, threads: tape.threads) { pair in
                                                let (b, h) = pair.quotientAndRemainder(dividingBy: numHeads)
                                                let offset = b * t * d + h * headDim
                                                let p = Kernels.Operand(pp.baseAddress! + pair * t * t, leadingDimension: t)
                                                let dO = Kernels.Operand(gp.baseAddress! + offset, leadingDimension: d)
                                                let dS = UnsafeMutablePointer<Float>.allocate(capacity: t * t)
                                                defer { dS.deallocate() }
                                                // dP = dO Vᵀ, dV = Pᵀ dO
                                                Kernels.gemm(
                                                    m: t, n: t, k: headDim, dO,
                                                    Kernels.Operand(vp.baseAddress! + offset, leadingDimension: d).transposed,
                                                    dS, ldc: t, threads: 1)
                                                Kernels.gemm(
                                                    m: t, n: headDim, k: t, p.transposed, dO, dvp.baseAddress! + offset, ldc: d, threads: 1)
                                                // dS_ij = P_ij (dP_ij − Σ_j P_ij dP_ij) / √D  (zero above the diagonal, where P is)
                                                for i in 0..<t {
                                                    let pRow = p.base + i * t
                                                    let row = dS + i * t
                                                    let weighted = Kernels.dot(pRow, row, count: i + 1)
                                                    for j in 0..<t { row[j] = pRow[j] * (row[j] - weighted) * scale }
                                                }
                                                // dQ = dS K, dK = dSᵀ Q
                                                let dSOperand = Kernels.Operand(dS, leadingDimension: t)
                                                Kernels.gemm(
                                                    m: t, n: headDim, k: t, dSOperand, .init(kp.baseAddress! + offset, leadingDimension: d),
                                                    dqp.baseAddress! + offset, ldc: d, threads: 1)
                                                Kernels.gemm(
                                                    m: t, n: headDim, k: t, dSOperand.transposed,
                                                    .init(qp.baseAddress! + offset, leadingDimension: d),
                                                    dkp.baseAddress! + offset, ldc: d, threads: 1)
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            tape.accumulate(q, dq)
            tape.accumulate(k, dk)
            tape.accumulate(v, dv)
        }
    }
}
