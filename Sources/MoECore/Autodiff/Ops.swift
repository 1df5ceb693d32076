#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

extension Tape {
    // MARK: Linear algebra

    /// y = x Wᵀ, x [N×in], W [out×in] (PyTorch layout). The three products read the
    /// transposes in place (strided operands), so no transposed copy is ever made.
    public func linear(_ x: Variable, _ w: Variable) -> Variable {
        let xv = value(x)
        let wv = value(w)
        let (n, inputs, outputs) = (xv.rows, xv.cols, wv.rows)
        var y = Tensor(uninitialized: [n, outputs])
        Tensor.product(xv, transposed: false, wv, transposed: true, into: &y, accumulate: false, threads: threads)
        return record(y) { g, tape in
            var dx = Tensor(uninitialized: [n, inputs])
            var dw = Tensor(uninitialized: [outputs, inputs])
            Tensor.product(g, transposed: false, wv, transposed: false, into: &dx, accumulate: false, threads: tape.threads)  // dx = dy W
            Tensor.product(g, transposed: true, xv, transposed: false, into: &dw, accumulate: false, threads: tape.threads)  // dW = dyᵀ x
            tape.accumulate(x, dx)
            tape.accumulate(w, dw)
        }
    }

    public func add(_ a: Variable, _ b: Variable) -> Variable {
        var sum = value(a)
        let bv = value(b)
        precondition(sum.shape == bv.shape, "add shapes \(sum.shape) + \(bv.shape)")
        sum.scalars.withUnsafeMutableBufferPointer { sp in
            bv.scalars.withUnsafeBufferPointer { bp in
                Kernels.axpy(1, bp.baseAddress!, sp.baseAddress!, count: sp.count)
            }
        }
        return record(sum) { g, tape in
            tape.accumulate(a, g)
            tape.accumulate(b, g)
        }
    }

    /// SwiGLU's gate, silu(gate) ⊙ up, as one op (one pass forward, one backward).
    public func swiglu(gate: Variable, up: Variable) -> Variable {
        let gv = value(gate)
        let uv = value(up)
        return record(Kernels.swiglu(gate: gv, up: uv)) { dy, tape in
            var dGate = Tensor(uninitialized: gv.shape)
            var dUp = Tensor(uninitialized: uv.shape)
            gv.scalars.withUnsafeBufferPointer { gp in
                uv.scalars.withUnsafeBufferPointer { up in
                    dy.scalars.withUnsafeBufferPointer { dp in
                        dGate.scalars.withUnsafeMutableBufferPointer { dg in
                            dUp.scalars.withUnsafeMutableBufferPointer { du in
                                Kernels.swigluBackward(
                                    gate: gp.baseAddress!, up: up.baseAddress!, outputGradient: dp.baseAddress!,
                                    gateGradient: dg.baseAddress!, upGradient: du.baseAddress!, count: dg.count)
                            }
                        }
                    }
                }
            }
            tape.accumulate(gate, dGate)
            tape.accumulate(up, dUp)
        }
    }

    /// a [N×C] + bias [C] on every row.
    public func addRow(_ a: Variable, _ bias: Variable) -> Variable {
        let av = value(a)
        let bv = value(bias)
        let c = av.cols
        var out = av
        for r in 0..<av.rows { for j in 0..<c { out.scalars[r * c + j] += bv.scalars[j] } }
        return record(out) { g, tape in
            tape.accumulate(a, g)
            var gb = [Float](repeating: 0, count: c)
            for r in 0..<g.rows { for j in 0..<c { gb[j] += g.scalars[r * c + j] } }
            tape.accumulate(bias, Tensor(shape: bv.shape, scalars: gb))
        }
    }

    public func multiply(_ a: Variable, _ b: Variable) -> Variable {
        let av = value(a)
        let bv = value(b)
        return record(av.zipped(bv, *)) { g, tape in
            tape.accumulate(a, g.zipped(bv, *))
            tape.accumulate(b, g.zipped(av, *))
        }
    }

    public func scale(_ a: Variable, by s: Float) -> Variable {
        record(value(a).mapped { $0 * s }) { g, tape in tape.accumulate(a, g.mapped { $0 * s }) }
    }

    /// s · a where s is a one-element variable (the Hybrid router's α).
    public func scale(_ a: Variable, byScalar s: Variable) -> Variable {
        let av = value(a)
        let sv = value(s).scalars[0]
        return record(av.mapped { $0 * sv }) { g, tape in
            tape.accumulate(a, g.mapped { $0 * sv })
            tape.accumulate(s, Tensor(shape: [1], scalars: [zip(g.scalars, av.scalars).reduce(0) { $0 + $1.0 * $1.1 }]))
        }
    }

    /// 1 − a
    public func oneMinus(_ a: Variable) -> Variable {
        record(value(a).mapped { 1 - $0 }) { g, tape in tape.accumulate(a, g.mapped { -$0 }) }
    }

    /// Columns [start, start + width) of a [N×C] tensor.
    public func columns(_ a: Variable, _ range: Range<Int>) -> Variable {
        let av = value(a)
        let c = av.cols
        let w = range.count
        var out = [Float]()
        out.reserveCapacity(av.rows * w)
        for r in 0..<av.rows { out += av.scalars[r * c + range.lowerBound..<r * c + range.upperBound] }
        return record(Tensor(shape: [av.rows, w], scalars: out)) { g, tape in
            var full = Tensor(zeros: av.shape)
            for r in 0..<av.rows {
                full.scalars.replaceSubrange(r * c + range.lowerBound..<r * c + range.upperBound, with: g.scalars[r * w..<(r + 1) * w])
            }
            tape.accumulate(a, full)
        }
    }

    // MARK: Elementwise nonlinearities

    func unary(_ a: Variable, _ f: (Float) -> Float, derivative: @escaping (Float, Float) -> Float) -> Variable {
        unary(a, output: value(a).mapped(f), derivative: derivative)
    }

    /// An elementwise op whose forward is a 16-lane kernel (`Kernels.apply`), so it equals
    /// the direct paths' use of the same kernel bit for bit.
    func unary(_ a: Variable, vector f: (Kernels.Vector) -> Kernels.Vector, derivative: @escaping (Float, Float) -> Float) -> Variable {
        var out = value(a)
        let count = out.count
        out.withMutableBase { Kernels.apply(f, to: $0, count: count) }
        return unary(a, output: out, derivative: derivative)
    }

    private func unary(_ a: Variable, output out: Tensor, derivative: @escaping (Float, Float) -> Float) -> Variable {
        let av = value(a)
        return record(out) { g, tape in
            tape.accumulate(
                a, Tensor(shape: av.shape, scalars: (0..<av.count).map { g.scalars[$0] * derivative(av.scalars[$0], out.scalars[$0]) }))
        }
    }

    public func sigmoid(_ a: Variable) -> Variable { unary(a, Kernels.sigmoid) { _, y in y * (1 - y) } }
    public func tanh(_ a: Variable) -> Variable { unary(a, Kernels.tanh) { _, y in 1 - y * y } }
    public func gelu(_ a: Variable) -> Variable {
        unary(a, vector: Kernels.gelu) { x, _ in
            0.5 * (1 + erff(x * 0.70710678118654752)) + x * expf(-0.5 * x * x) * 0.3989422804014327
        }
    }

    // MARK: Normalisation and softmax

    /// RMSNorm over rows with a learned gain.
    public func rmsNorm(_ x: Variable, gain: Variable, epsilon: Float) -> Variable {
        let xv = value(x)
        let gv = value(gain)
        let (n, c) = (xv.rows, xv.cols)
        var y = Tensor(zeros: xv.shape)
        var rstd = [Float](repeating: 0, count: n)
        xv.scalars.withUnsafeBufferPointer { xp in
            gv.scalars.withUnsafeBufferPointer { gp in
                y.scalars.withUnsafeMutableBufferPointer { yp in
                    rstd.withUnsafeMutableBufferPointer { rp in
                        Kernels.rmsNorm(
                            xp.baseAddress!, gain: gp.baseAddress!, yp.baseAddress!, rows: n, cols: c, eps: epsilon, rstd: rp.baseAddress!)
                    }
                }
            }
        }
        return record(y) { g, tape in
            var dx = Tensor(zeros: xv.shape)
            var dg = [Float](repeating: 0, count: c)
            for r in 0..<n {
                let o = r * c
                let s = rstd[r]
                // dx = s·(g⊙γ) − s³/C · x · Σ(g⊙γ⊙x)
                var dot: Float = 0
                for j in 0..<c { dot += g.scalars[o + j] * gv.scalars[j] * xv.scalars[o + j] }
                let k = s * s * s * dot / Float(c)
                for j in 0..<c {
                    dx.scalars[o + j] = s * g.scalars[o + j] * gv.scalars[j] - k * xv.scalars[o + j]
                    dg[j] += g.scalars[o + j] * xv.scalars[o + j] * s
                }
            }
            tape.accumulate(x, dx)
            tape.accumulate(gain, Tensor(shape: gv.shape, scalars: dg))
        }
    }

    /// Softmax of every row.
    public func softmaxRows(_ x: Variable) -> Variable {
        var y = value(x)
        let c = y.cols
        let rows = y.rows
        y.scalars.withUnsafeMutableBufferPointer { p in for r in 0..<rows { Kernels.softmax(p.baseAddress! + r * c, count: c) } }
        return record(y) { g, tape in
            var dx = Tensor(zeros: y.shape)
            for r in 0..<y.rows {
                let o = r * c
                var dot: Float = 0
                for j in 0..<c { dot += g.scalars[o + j] * y.scalars[o + j] }
                for j in 0..<c { dx.scalars[o + j] = y.scalars[o + j] * (g.scalars[o + j] - dot) }
            }
            tape.accumulate(x, dx)
        }
    }

    // MARK: Indexing

    /// Rows `ids` of `table` (an embedding lookup, or gathering a batch for one expert).
    public func gatherRows(_ table: Variable, _ ids: [Int]) -> Variable {
        let tv = value(table)
        let c = tv.cols
        var out = [Float]()
        out.reserveCapacity(ids.count * c)
        for id in ids { out += tv.row(id) }
        return record(Tensor(shape: [ids.count, c], scalars: out)) { g, tape in
            var dt = Tensor(zeros: tv.shape)
            dt.scalars.withUnsafeMutableBufferPointer { dp in
                g.scalars.withUnsafeBufferPointer { gp in
                    for (r, id) in ids.enumerated() { Kernels.axpy(1, gp.baseAddress! + r * c, dp.baseAddress! + id * c, count: c) }
                }
            }
            tape.accumulate(table, dt)
        }
    }

    /// Entries (row, column) of a matrix, as a vector (e.g. the probabilities of chosen experts).
    public func gatherEntries(_ x: Variable, _ entries: [(row: Int, column: Int)]) -> Variable {
        let xv = value(x)
        let c = xv.cols
        return record(Tensor(shape: [entries.count], scalars: entries.map { xv.scalars[$0.row * c + $0.column] })) { g, tape in
            var dx = Tensor(zeros: xv.shape)
            for (i, e) in entries.enumerated() { dx.scalars[e.row * c + e.column] += g.scalars[i] }
            tape.accumulate(x, dx)
        }
    }

    /// out[rows[i]] += weights[i] · x[i] into a zero [count × C] matrix: the MoE combine step.
    public func weightedScatterRows(_ x: Variable, weights: Variable, rows: [Int], count: Int) -> Variable {
        let xv = value(x)
        let wv = value(weights)
        let c = xv.cols
        var out = Tensor(zeros: [count, c])
        out.scalars.withUnsafeMutableBufferPointer { op in
            xv.scalars.withUnsafeBufferPointer { xp in
                for (i, r) in rows.enumerated() { Kernels.axpy(wv.scalars[i], xp.baseAddress! + i * c, op.baseAddress! + r * c, count: c) }
            }
        }
        return record(out) { g, tape in
            var dx = Tensor(zeros: xv.shape)
            var dw = Tensor(zeros: wv.shape)
            g.scalars.withUnsafeBufferPointer { gp in
                xv.scalars.withUnsafeBufferPointer { xp in
                    dx.scalars.withUnsafeMutableBufferPointer { dp in
                        for (i, r) in rows.enumerated() {
                            Kernels.axpy(wv.scalars[i], gp.baseAddress! + r * c, dp.baseAddress! + i * c, count: c)
                            dw.scalars[i] = Kernels.dot(gp.baseAddress! + r * c, xp.baseAddress! + i * c, count: c)
                        }
                    }
                }
            }
            tape.accumulate(x, dx)
            tape.accumulate(weights, dw)
        }
    }

    /// w_i / Σ_{j in group(i)} w_j for consecutive groups of `groupSize` (top-k renormalisation).
    public func normalizeGroups(_ w: Variable, groupSize: Int) -> Variable {
        let wv = value(w)
        var out = wv
        var sums = [Float](repeating: 0, count: wv.count / groupSize)
        for gi in sums.indices {
            sums[gi] = wv.scalars[gi * groupSize..<(gi + 1) * groupSize].reduce(0, +)
            for j in 0..<groupSize { out.scalars[gi * groupSize + j] /= sums[gi] }
        }
        return record(out) { g, tape in
            var dw = Tensor(zeros: wv.shape)
            for gi in sums.indices {
                let o = gi * groupSize
                var dot: Float = 0
                for j in 0..<groupSize { dot += g.scalars[o + j] * out.scalars[o + j] }
                for j in 0..<groupSize { dw.scalars[o + j] = (g.scalars[o + j] - dot) / sums[gi] }
            }
            tape.accumulate(w, dw)
        }
    }

    // MARK: Reductions and losses

    public func sum(_ x: Variable) -> Variable {
        let xv = value(x)
        return record(Tensor(shape: [1], scalars: [xv.scalars.reduce(0, +)])) { g, tape in
            tape.accumulate(x, Tensor(repeating: g.scalars[0], shape: xv.shape))
        }
    }

    /// Mean cross-entropy of logits [N×V] against `targets` (N ids).
    public func crossEntropy(_ logits: Variable, targets: [Int]) -> Variable {
        let lv = value(logits)
        let v = lv.cols
        let n = lv.rows
        var probabilities = lv
        var loss: Float = 0
        probabilities.scalars.withUnsafeMutableBufferPointer { p in
            for r in 0..<n {
                Kernels.softmax(p.baseAddress! + r * v, count: v)
                loss -= logf(max(p[r * v + targets[r]], 1e-30))
            }
        }
        return record(Tensor(shape: [1], scalars: [loss / Float(n)])) { g, tape in
            var d = probabilities
            let s = g.scalars[0] / Float(n)
            d.scalars.withUnsafeMutableBufferPointer { dp in
                for r in 0..<n { dp[r * v + targets[r]] -= 1 }
                let scale = Kernels.Vector(repeating: s)
                var i = 0
                while i + Kernels.width <= dp.count {
                    Kernels.store(Kernels.load(dp.baseAddress! + i) * scale, dp.baseAddress! + i)
                    i += Kernels.width
                }
                while i < dp.count {
                    dp[i] *= s
                    i += 1
                }
            }
            tape.accumulate(logits, d)
        }
    }

    /// Router z-loss (ST-MoE): mean over rows of (logsumexp(logits))².
    public func zLoss(_ logits: Variable) -> Variable {
        let lv = value(logits)
        let c = lv.cols
        var lse = [Float](repeating: 0, count: lv.rows)
        for r in 0..<lv.rows {
            let row = lv.scalars[r * c..<(r + 1) * c]
            let m = row.max()!
            lse[r] = m + logf(row.reduce(0) { $0 + expf($1 - m) })
        }
        return record(Tensor(shape: [1], scalars: [lse.reduce(0) { $0 + $1 * $1 } / Float(lv.rows)])) { g, tape in
            var d = Tensor(zeros: lv.shape)
            for r in 0..<lv.rows {
                let k = 2 * lse[r] / Float(lv.rows) * g.scalars[0]
                for j in 0..<c { d.scalars[r * c + j] = k * expf(lv.scalars[r * c + j] - lse[r]) }
            }
            tape.accumulate(logits, d)
        }
    }

    /// Switch/HF load-balance loss for one layer: E · Σ_e f_e · P_e, with f_e the fraction of
    /// routed slots that chose e (a constant) and P_e the mean router probability of e.
    /// Equals k when routing is uniform.
    public func loadBalanceLoss(probabilities: Variable, choices: [[Int]]) -> Variable {
        loadBalanceLoss(pooling: [(probabilities, choices)])
    }

    /// The same loss with f_e and P_e taken over the tokens of every layer given at once, as
    /// RMoE's released code (Hugging Face's `load_balancing_loss_func` on the concatenated
    /// router logits of all layers) computes it: one loss for the stack, not a mean of per-layer
    /// losses. Also k at uniform routing.
    public func loadBalanceLoss(pooling layers: [(probabilities: Variable, choices: [[Int]])]) -> Variable {
        let values = layers.map { value($0.probabilities) }
        let e = values[0].cols
        let n = values.reduce(0) { $0 + $1.rows }
        var fraction = [Float](repeating: 0, count: e)
        for layer in layers { for row in layer.choices { for x in row { fraction[x] += 1 } } }
        fraction = fraction.map { $0 / Float(n) }  // Σ f = k: each token fills k slots
        var meanP = [Float](repeating: 0, count: e)
        for pv in values { for r in 0..<pv.rows { for j in 0..<e { meanP[j] += pv.scalars[r * e + j] / Float(n) } } }
        let loss = Float(e) * zip(fraction, meanP).reduce(0) { $0 + $1.0 * $1.1 }
        return record(Tensor(shape: [1], scalars: [loss])) { g, tape in
            for (layer, pv) in zip(layers, values) {
                var d = Tensor(zeros: pv.shape)
                for r in 0..<pv.rows { for j in 0..<e { d.scalars[r * e + j] = g.scalars[0] * Float(e) * fraction[j] / Float(n) } }
                tape.accumulate(layer.probabilities, d)
            }
        }
    }
}
