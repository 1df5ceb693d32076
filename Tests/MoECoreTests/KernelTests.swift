import Foundation
import Testing

@testable import MoECore

/// Every fast kernel against a plain reference.
@Suite struct KernelTests {
    func reference(_ a: [Float], _ b: [Float], m: Int, k: Int, n: Int) -> [Float] {
        var c = [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var s: Float = 0
                for p in 0..<k { s += a[i * k + p] * b[p * n + j] }
                c[i * n + j] = s
            }
        }
        return c
    }

    @Test(arguments: [
        (1, 1, 1), (1, 32, 8), (5, 7, 3), (6, 16, 16), (7, 33, 17), (13, 128, 40), (1, 128, 1024), (12, 5, 48), (200, 20, 24), (97, 9, 16),
    ])
    func matmulMatchesReference(shape: (Int, Int, Int)) {
        let (m, k, n) = shape
        var g = SeededGenerator(seed: UInt64(m * 1000 + k * 10 + n))
        let a = (0..<(m * k)).map { _ in g.nextNormal() }
        let b = (0..<(k * n)).map { _ in g.nextNormal() }
        let base = (0..<(m * n)).map { _ in g.nextNormal() }
        var c = base
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    Kernels.matmul(ap.baseAddress!, bp.baseAddress!, cp.baseAddress!, m: m, k: k, n: n)
                }
            }
        }
        let expected = reference(a, b, m: m, k: k, n: n)
        for i in 0..<(m * n) { #expect(abs(c[i] - expected[i]) < 1e-4 * Float(k).squareRoot(), "C[\(i)]") }
        // accumulate adds onto what C held
        var acc = base
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                acc.withUnsafeMutableBufferPointer { cp in
                    Kernels.matmul(ap.baseAddress!, bp.baseAddress!, cp.baseAddress!, m: m, k: k, n: n, accumulate: true)
                }
            }
        }
        for i in 0..<(m * n) { #expect(abs(acc[i] - (base[i] + expected[i])) < 1e-4 * Float(k).squareRoot()) }
    }

    /// Every combination of transposed operands, on shapes that exercise the few-rows path,
    /// ragged micro-tiles and more than one 256-deep block, against the plain reference.
    @Test(arguments: [(1, 37, 9), (5, 37, 9), (6, 16, 16), (13, 300, 40), (50, 600, 7), (97, 513, 33)])
    func transposedOperandsMatchReference(shape: (Int, Int, Int)) {
        let (m, k, n) = shape
        var g = SeededGenerator(seed: UInt64(m + k + n))
        let a = Tensor(randomNormal: [m, k], std: 1, using: &g)
        let b = Tensor(randomNormal: [k, n], std: 1, using: &g)
        let expected = reference(a.scalars, b.scalars, m: m, k: k, n: n)
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            var c = Tensor(zeros: [m, n])
            Tensor.product(ta ? a.transposed() : a, transposed: ta, tb ? b.transposed() : b, transposed: tb, into: &c, accumulate: false)
            let worst = zip(c.scalars, expected).map { abs($0 - $1) }.max() ?? 0
            #expect(worst < 1e-4 * Float(k).squareRoot(), "Aᵀ \(ta) Bᵀ \(tb)")
        }
    }

    /// A product into a sub-block of a wider C (leading dimension > n) leaves the rest alone.
    @Test func productIntoStridedBlockOfC() {
        var g = SeededGenerator(seed: 11)
        let (m, k, n, ldc) = (20, 30, 18, 40)
        let a = (0..<(m * k)).map { _ in g.nextNormal() }
        let b = (0..<(k * n)).map { _ in g.nextNormal() }
        var c = [Float](repeating: 7, count: m * ldc)
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    Kernels.gemm(
                        m: m, n: n, k: k, .init(ap.baseAddress!, leadingDimension: k), .init(bp.baseAddress!, leadingDimension: n),
                        cp.baseAddress! + 3, ldc: ldc)
                }
            }
        }
        let expected = reference(a, b, m: m, k: k, n: n)
        for i in 0..<m {
            for j in 0..<ldc {
                if (3..<(3 + n)).contains(j) {
                    #expect(abs(c[i * ldc + j] - expected[i * n + j - 3]) < 1e-3)
                } else {
                    #expect(c[i * ldc + j] == 7)
                }
            }
        }
    }

    /// Splitting rows over threads must not change a single bit (each entry keeps one thread
    /// and one summation order), so training results do not depend on MOESCOPE_THREADS.
    /// Split along rows (m ≥ n) and along columns (m < n).
    @Test(arguments: [(400, 128, 120), (100, 300, 1030)])
    func threadedProductEqualsSingleThreaded(shape: (Int, Int, Int)) {
        var g = SeededGenerator(seed: 8)
        let (m, k, n) = shape
        #expect(Kernels.threadsUsed(m: m, k: k, n: n, threads: 2) == 2)
        let a = (0..<(m * k)).map { _ in g.nextNormal() }
        let b = (0..<(k * n)).map { _ in g.nextNormal() }
        var one = [Float](repeating: 0, count: m * n)
        var two = one
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                one.withUnsafeMutableBufferPointer {
                    Kernels.matmul(ap.baseAddress!, bp.baseAddress!, $0.baseAddress!, m: m, k: k, n: n, threads: 1)
                }
                two.withUnsafeMutableBufferPointer {
                    Kernels.matmul(ap.baseAddress!, bp.baseAddress!, $0.baseAddress!, m: m, k: k, n: n, threads: 2)
                }
            }
        }
        #expect(one == two)
        #expect(one[0] != 0)
    }

    /// B packed once (`PackedB`) serves products that read any top-left part of it — fewer
    /// rows (over one and two 256-deep blocks) and fewer columns (ragged panels) — bit for bit
    /// as B packed for each product alone, and equal to the plain reference.
    @Test(arguments: [(300, 70), (300, 33), (257, 70), (100, 64), (100, 1)])
    func prepackedProductEqualsPackingPerProduct(used: (k: Int, n: Int)) {
        var g = SeededGenerator(seed: 21)
        let (m, k, n) = (13, 300, 70)
        let a = (0..<(m * k)).map { _ in g.nextNormal() }
        let b = (0..<(k * n)).map { _ in g.nextNormal() }
        var prepacked = [Float](repeating: 0, count: m * n)
        var perProduct = prepacked
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                let aOperand = Kernels.Operand(ap.baseAddress!, leadingDimension: k)
                let bOperand = Kernels.Operand(bp.baseAddress!, leadingDimension: n)
                let packed = Kernels.PackedB(bOperand, k: k, n: n)
                defer { packed.deallocate() }
                prepacked.withUnsafeMutableBufferPointer {
                    Kernels.packedProduct(
                        m: m, n: used.n, k: used.k, aOperand, bOperand, $0.baseAddress!, ldc: n, accumulate: false, prepacked: packed)
                }
                perProduct.withUnsafeMutableBufferPointer {
                    Kernels.packedProduct(m: m, n: used.n, k: used.k, aOperand, bOperand, $0.baseAddress!, ldc: n, accumulate: false)
                }
            }
        }
        #expect(prepacked == perProduct)
        // The plain reference on the used part; the columns past it are left alone.
        let aUsed = (0..<m).flatMap { i in a[(i * k)..<(i * k + used.k)] }
        let bUsed = (0..<used.k).flatMap { p in b[(p * n)..<(p * n + used.n)] }
        let expected = reference(aUsed, bUsed, m: m, k: used.k, n: used.n)
        for i in 0..<m {
            for j in 0..<n {
                if j < used.n {
                    #expect(abs(prepacked[i * n + j] - expected[i * used.n + j]) < 1e-4 * Float(used.k).squareRoot(), "C[\(i), \(j)]")
                } else {
                    #expect(prepacked[i * n + j] == 0)
                }
            }
        }
    }

    /// Causal attention (keys and values packed once for every query block) against the plain
    /// definition, softmax(q·kᵀ·scale over the visible keys)·v, for a block of new queries after
    /// a cache (more than 256 keys: two depth blocks) and for one decoded token (read in place).
    @Test(arguments: [(200, 100), (0, 50), (299, 1)])
    func causalAttentionMatchesDefinition(shape: (offset: Int, count: Int)) {
        var g = SeededGenerator(seed: 22)
        let (offset, count, dims, valueDims, ld) = (shape.offset, shape.count, 24, 20, 40)
        let length = offset + count
        let q = (0..<(count * ld)).map { _ in g.nextNormal() }
        let k = (0..<(length * ld)).map { _ in g.nextNormal() }
        let v = (0..<(length * ld)).map { _ in g.nextNormal() }
        let scale: Float = 0.3
        var scores = [Float](repeating: .nan, count: count * length)
        var out = [Float](repeating: 0, count: count * ld)
        q.withUnsafeBufferPointer { qp in
            k.withUnsafeBufferPointer { kp in
                v.withUnsafeBufferPointer { vp in
                    Kernels.causalAttention(
                        count: count, offset: offset, queries: .init(qp.baseAddress!, leadingDimension: ld),
                        keys: .init(kp.baseAddress! + 3, leadingDimension: ld), values: .init(vp.baseAddress! + 5, leadingDimension: ld),
                        dims: dims, valueDims: valueDims, scale: scale, scores: &scores, into: &out, ldo: ld)
                }
            }
        }
        var worst: Float = 0
        for i in 0..<count {
            let visible = offset + i + 1
            let logits = (0..<visible).map { j in (0..<dims).reduce(Float(0)) { $0 + q[i * ld + $1] * k[j * ld + 3 + $1] } * scale }
            let top = logits.max()!
            let weights = logits.map { Foundation.exp($0 - top) }
            let total = weights.reduce(0, +)
            for c in 0..<valueDims {
                let expected = (0..<visible).reduce(Float(0)) { $0 + weights[$1] / total * v[$1 * ld + 5 + c] }
                worst = max(worst, abs(out[i * ld + c] - expected))
            }
            for j in 0..<length where j >= visible { #expect(scores[i * length + j] == 0) }
        }
        #expect(worst < 1e-5)
    }

    /// The few-row attention of decoding (scores summed pairwise) against `causalAttention`
    /// and the plain definition: one to five new rows after an empty, short and long cache, at
    /// moescope's head width (32), a Hugging Face one (128), ragged ones (24 with a tail, 8 with
    /// no full chunk) and latent attention's 192/128 key/value widths; probabilities past each
    /// row's visible keys exactly 0.
    @Test(arguments: [(0, 1, 32, 32), (7, 1, 32, 32), (200, 1, 128, 128), (63, 5, 24, 20), (3, 2, 8, 8), (130, 3, 192, 128)])
    func fewRowAttentionMatchesCausalAttention(shape: (offset: Int, count: Int, dims: Int, valueDims: Int)) {
        var g = SeededGenerator(seed: UInt64(shape.offset * 10 + shape.dims))
        let (offset, count, dims, valueDims) = shape
        let ld = dims + valueDims + 3
        let length = offset + count
        let q = (0..<(count * ld)).map { _ in g.nextNormal() }
        let k = (0..<(length * ld)).map { _ in g.nextNormal() }
        let v = (0..<(length * ld)).map { _ in g.nextNormal() }
        let scale = 1 / Float(dims).squareRoot()
        func run(fewRows: Bool) -> (scores: [Float], out: [Float]) {
            var scores = [Float](repeating: .nan, count: count * length)
            var out = [Float](repeating: .nan, count: count * ld)
            q.withUnsafeBufferPointer { qp in
                k.withUnsafeBufferPointer { kp in
                    v.withUnsafeBufferPointer { vp in
                        scores.withUnsafeMutableBufferPointer { sp in
                            out.withUnsafeMutableBufferPointer { op in
                                let (queries, keys) = (
                                    Kernels.Operand(qp.baseAddress!, leadingDimension: ld),
                                    Kernels.Operand(kp.baseAddress!, leadingDimension: ld)
                                )
                                let values = Kernels.Operand(vp.baseAddress! + dims, leadingDimension: ld)
                                if fewRows {
                                    Kernels.fewRowAttention(
                                        count: count, offset: offset, queries: queries, keys: keys, values: values, dims: dims,
                                        valueDims: valueDims, scale: scale, scores: sp.baseAddress!, into: op.baseAddress!, ldo: ld)
                                } else {
                                    Kernels.causalAttention(
                                        count: count, offset: offset, queries: queries, keys: keys, values: values, dims: dims,
                                        valueDims: valueDims, scale: scale, scores: sp.baseAddress!, into: op.baseAddress!, ldo: ld)
                                }
                            }
                        }
                    }
                }
            }
            return (scores, out)
        }
        let (fewScores, fewOut) = run(fewRows: true)
        let (scores, out) = run(fewRows: false)
        for i in 0..<count {
            let visible = offset + i + 1
            for j in 0..<length {
                #expect(abs(fewScores[i * length + j] - scores[i * length + j]) <= 1e-6)
                if j >= visible { #expect(fewScores[i * length + j] == 0) }
            }
            // The definition, in doubles.
            let logits = (0..<visible).map { j in
                (0..<dims).reduce(0.0) { $0 + Double(q[i * ld + $1]) * Double(k[j * ld + $1]) } * Double(scale)
            }
            let top = logits.max()!
            let weights = logits.map { Foundation.exp($0 - top) }
            let total = weights.reduce(0, +)
            for c in 0..<valueDims {
                let expected = (0..<visible).reduce(0.0) { $0 + weights[$1] / total * Double(v[$1 * ld + dims + c]) }
                #expect(abs(Double(fewOut[i * ld + c]) - expected) < 1e-5)
                #expect(abs(fewOut[i * ld + c] - out[i * ld + c]) < 1e-5)
            }
        }
    }

    /// The packed one-row product: each output bit for bit what `dot` (and so `gemm`'s
    /// few-rows path) gives, and near the plain sum, at ragged shapes (k with and without a
    /// tail, an odd number of chunks, outputs not a multiple of the 16-output panel), for
    /// 1 to 5 input rows; signed zeros included (an all-zero row sums to +0 either way).
    @Test(arguments: [
        (1, 1), (3, 8), (16, 16), (17, 33), (40, 48), (8, 64), (257, 128), (33, 130), (128, 256), (5, 15), (64, 40), (192, 48),
        (1024, 128),
    ])
    func packedRowsEqualDotAndReference(shape: (Int, Int)) {
        let (n, k) = shape
        var g = SeededGenerator(seed: UInt64(n * 1000 + k))
        var w = Tensor(randomNormal: [n, k], std: 1, using: &g)
        for p in 0..<k { w.scalars[p] = -0.0 }  // a row of negative zeros
        let packed = Kernels.PackedRows(w)
        for rows in 1...5 {
            let x = Tensor(randomNormal: [rows, k], std: 1, using: &g)
            var y = [Float](repeating: .nan, count: rows * n)
            var viaGEMM = Tensor(uninitialized: [rows, n])
            Tensor.product(x, transposed: false, w, transposed: true, into: &viaGEMM, accumulate: false, threads: 1)
            x.scalars.withUnsafeBufferPointer { xp in
                y.withUnsafeMutableBufferPointer { packed.multiply(xp.baseAddress!, rows: rows, ldx: k, into: $0.baseAddress!, ldy: n) }
                w.scalars.withUnsafeBufferPointer { wp in
                    for r in 0..<rows {
                        for j in 0..<n {
                            let expected = Kernels.dot(xp.baseAddress! + r * k, wp.baseAddress! + j * k, count: k)
                            #expect(y[r * n + j].bitPattern == expected.bitPattern, "row \(r), output \(j)")
                            var plain: Double = 0
                            for p in 0..<k { plain += Double(xp[r * k + p]) * Double(wp[j * k + p]) }
                            #expect(abs(Double(y[r * n + j]) - plain) < 1e-4 * Double(k).squareRoot())
                        }
                    }
                }
            }
            #expect(y.map(\.bitPattern) == viaGEMM.scalars.map(\.bitPattern))
            #expect(y[0].bitPattern == Float(0).bitPattern)  // the row of negative zeros
        }
    }

    /// A router's product through `Linear` (what `LinearRouter` runs: the packed
    /// rows for a few tokens, the prepacked GEMM for more) gives the bits the plain one-thread
    /// `Tensor.product` gives, on both sides of the few-rows cut.
    @Test(arguments: [(8, 64), (60, 40), (64, 33)])
    func linearEqualsOneThreadProduct(shape: (experts: Int, width: Int)) {
        var g = SeededGenerator(seed: UInt64(shape.experts * 100 + shape.width))
        let router = Linear(weight: Tensor(randomNormal: [shape.experts, shape.width], std: 0.1, using: &g))
        for rows in 1...(2 * Kernels.microRows + 1) {
            let x = Tensor(randomNormal: [rows, shape.width], std: 1, using: &g)
            var viaProduct = Tensor(uninitialized: [rows, shape.experts])
            Tensor.product(x, transposed: false, router.weight.value, transposed: true, into: &viaProduct, accumulate: false, threads: 1)
            #expect(router(x, threads: 1).scalars.map(\.bitPattern) == viaProduct.scalars.map(\.bitPattern), "\(rows) rows")
        }
    }

    /// Few-row products split between this thread and the helper thread give the same bits as
    /// on one thread: an expert's gate and up (256 × 128) and a down (128 × 256) together, one
    /// and two input rows, and a product too small to split.
    @Test func splitRowProductsEqualOneThread() {
        var g = SeededGenerator(seed: 14)
        let weights = [[256, 128], [256, 128], [128, 256], [8, 64]].map { Tensor(randomNormal: $0, std: 1, using: &g) }
        let packed = weights.map { Kernels.PackedRows($0) }
        for rows in 1...2 {
            let inputs = weights.map { Tensor(randomNormal: [rows, $0.cols], std: 1, using: &g) }
            func run(threads: Int) -> [[Float]] {
                var outputs = weights.map { [Float](repeating: .nan, count: rows * $0.rows) }
                let inputBuffers = inputs.map { input in
                    let p = UnsafeMutablePointer<Float>.allocate(capacity: input.count)
                    p.initialize(from: input.scalars, count: input.count)
                    return p
                }
                let outputBuffers = outputs.map { UnsafeMutablePointer<Float>.allocate(capacity: $0.count) }
                defer { (inputBuffers + outputBuffers).forEach { $0.deallocate() } }
                Kernels.multiplyRows(
                    packed.indices.map { .init(weights: packed[$0], input: inputBuffers[$0], rows: rows, output: outputBuffers[$0]) },
                    threads: threads)
                for i in outputs.indices { outputs[i] = Array(UnsafeBufferPointer(start: outputBuffers[i], count: outputs[i].count)) }
                return outputs
            }
            let one = run(threads: 1)
            let two = run(threads: 2)
            #expect(one.map { $0.map(\.bitPattern) } == two.map { $0.map(\.bitPattern) })
            for i in weights.indices {
                let linear = Linear(weight: weights[i])
                #expect(one[i].map(\.bitPattern) == linear(inputs[i], threads: 1).scalars.map(\.bitPattern))
            }
        }
    }

    /// A decoded token's experts run whole, one per thread (`Linear.applyMLPs` on two threads),
    /// give the bits of the two-split path and of each `SwiGLU` alone on one thread: two and
    /// three MLPs (one thread takes two), one and two input rows, and the fallback for a batch.
    @Test func wholeMLPsPerThreadEqualEachMLPAlone() {
        var g = SeededGenerator(seed: 15)
        func weight(_ rows: Int, _ cols: Int) -> Linear { Linear(weight: Tensor(randomNormal: [rows, cols], std: 0.1, using: &g)) }
        let mlps = (0..<3).map { _ in SwiGLU(gate: weight(256, 128), up: weight(256, 128), down: weight(128, 256)) }
        for rows in [1, 2, 7] {
            for count in [2, 3] {
                let inputs = (0..<count).map { _ in Tensor(randomNormal: [rows, 128], std: 1, using: &g) }
                let which = Array([2, 0, 1].prefix(count))
                let two = Linear.applyMLPs(mlps, which, on: inputs, threads: 2)
                let split = Linear.applyMLPsInTwoSplits(mlps, which, on: inputs, threads: 2)
                for i in 0..<count {
                    let alone = mlps[which[i]](inputs[i], threads: 1)
                    #expect(two[i].shape == [rows, 128])
                    #expect(two[i].scalars.map(\.bitPattern) == alone.scalars.map(\.bitPattern))
                    #expect(split[i].scalars.map(\.bitPattern) == alone.scalars.map(\.bitPattern))
                }
            }
        }
    }

    @Test func transposeIsExact() {
        let t = Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6]).transposed()
        #expect(t.shape == [3, 2])
        #expect(t.scalars == [1, 4, 2, 5, 3, 6])
    }

    @Test(arguments: [0, 1, 15, 16, 17, 31, 32, 33, 100])
    func dotAndAxpyMatchReference(n: Int) {
        var g = SeededGenerator(seed: UInt64(n))
        let x = (0..<n).map { _ in g.nextNormal() }
        let y = (0..<n).map { _ in g.nextNormal() }
        let d = x.withUnsafeBufferPointer { xp in
            y.withUnsafeBufferPointer { yp in
                Kernels.dot(xp.baseAddress ?? UnsafePointer(bitPattern: 8)!, yp.baseAddress ?? UnsafePointer(bitPattern: 8)!, count: n)
            }
        }
        #expect(abs(d - zip(x, y).map(*).reduce(0, +)) < 1e-4)
        guard n > 0 else { return }
        var out = y
        x.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { op in Kernels.axpy(0.5, xp.baseAddress!, op.baseAddress!, count: n) }
        }
        for i in 0..<n { #expect(abs(out[i] - (y[i] + 0.5 * x[i])) < 1e-6) }
    }

    @Test func softmaxIsADistributionAndHandlesMinusInfinity() {
        var row: [Float] = [1, 2, -.infinity, 3, 1000]
        row.withUnsafeMutableBufferPointer { Kernels.softmax($0.baseAddress!, count: $0.count) }
        #expect(abs(row.reduce(0, +) - 1) < 1e-6)
        #expect(row[2] == 0)
        #expect(row.allSatisfy { $0.isFinite && $0 >= 0 })
        var mixture: [Float] = [0, -.infinity, 0, -.infinity]
        mixture.withUnsafeMutableBufferPointer { Kernels.softmax($0.baseAddress!, count: $0.count) }
        #expect(mixture == [0.5, 0, 0.5, 0])
    }

    /// The vector exp against libm's expf: within 2 ulp across the float range, exact 0 at −∞,
    /// +∞ on overflow, NaN kept.
    @Test func vectorExpMatchesLibm() {
        var worstUlps: Float = 0
        var x: Float = -103
        while x < 88.7 {
            let lanes = Kernels.exp(Kernels.Vector((0..<16).map { x + Float($0) * 0.003 }))
            for lane in 0..<16 {
                let exact = expf(x + Float(lane) * 0.003)
                worstUlps = max(worstUlps, abs(lanes[lane] - exact) / max(exact.ulp, Float.leastNormalMagnitude))
            }
            x += 0.071
        }
        #expect(worstUlps <= 2, "worst error \(worstUlps) ulp")
        let special = Kernels.exp(Kernels.Vector([-.infinity, .infinity, .nan, 0, 1, -200, 200, 88.7, -87, 1e-8, -1e-8, 2, 3, 4, 5, 6]))
        #expect(
            special[0] == 0 && special[1] == .infinity && special[2].isNaN && special[3] == 1 && special[5] == 0 && special[6] == .infinity)
        #expect(abs(special[4] - expf(1)) <= expf(1).ulp)
    }

    /// `fusedExp` against libm's expf: within 2 ulp from −87.3 to 88.3 (its normal range);
    /// 0 below and at −∞, +∞ above and at +∞, NaN kept, e⁰ = 1.
    @Test func fusedExpMatchesLibm() {
        var worstUlps: Float = 0
        var x: Float = -87.3
        while x < 88.3 {
            let inputs = (0..<16).map { min(88.3, x + Float($0) * 0.003) }
            let lanes = Kernels.fusedExp(Kernels.Vector(inputs))
            for (lane, input) in inputs.enumerated() { worstUlps = max(worstUlps, abs(lanes[lane] - expf(input)) / expf(input).ulp) }
            x += 0.071
        }
        #expect(worstUlps <= 2, "worst error \(worstUlps) ulp")
        let special = Kernels.fusedExp(
            Kernels.Vector([-.infinity, .infinity, .nan, 0, 1, -200, 200, 88.5, -87.5, 1e-8, -1e-8, 2, 3, 4, 5, 6]))
        #expect(special[0] == 0 && special[1] == .infinity && special[2].isNaN && special[3] == 1 && special[5] == 0)
        #expect(special[6] == .infinity && special[7] == .infinity && special[8] == 0)
        #expect(abs(special[4] - expf(1)) <= expf(1).ulp)
    }

    /// SwiGLU's kernel against silu(g)·u = g / (1 + e⁻ᵍ) · u in Double: within 4·10⁻⁷ relative
    /// (1e-30 absolute where the product is tiny) for every length from 1 to 40 (full vectors
    /// and a partial one), writing nothing past `count`.
    @Test func swigluMatchesDefinition() {
        var g = SeededGenerator(seed: 8)
        for n in 1...40 {
            let gate = (0..<n).map { _ in g.nextNormal() * 9 }
            let up = (0..<n).map { _ in g.nextNormal() }
            var out = [Float](repeating: 7.5, count: n + 17)
            gate.withUnsafeBufferPointer { gp in
                up.withUnsafeBufferPointer { upp in
                    out.withUnsafeMutableBufferPointer {
                        Kernels.swiglu(gate: gp.baseAddress!, up: upp.baseAddress!, $0.baseAddress!, count: n)
                    }
                }
            }
            for i in 0..<n {
                let exact = Double(gate[i]) / (1 + Foundation.exp(-Double(gate[i]))) * Double(up[i])
                #expect(abs(Double(out[i]) - exact) <= max(4e-7 * abs(exact), 1e-30), "n \(n) entry \(i)")
            }
            #expect(out[n...].allSatisfy { $0 == 7.5 })
        }
    }

    /// The vector tanh against libm's tanhf: within 3 ulp (or 1e-9 absolute near 0) from −12 to
    /// 12, on both sides of the polynomial's 0.625 boundary; ±1 at ±∞, NaN kept, odd, and the
    /// scalar form equal to the vector's lane.
    @Test func vectorTanhMatchesLibm() {
        var worstUlps: Float = 0
        var x: Float = -12
        while x < 12 {
            let inputs = (0..<16).map { x + Float($0) * 0.0007 }
            let lanes = Kernels.tanh(Kernels.Vector(inputs))
            for (lane, input) in inputs.enumerated() {
                let exact = tanhf(input)
                if abs(lanes[lane] - exact) > 1e-9 { worstUlps = max(worstUlps, abs(lanes[lane] - exact) / exact.ulp) }
                #expect(Kernels.tanh(input) == lanes[lane])
                #expect(Kernels.tanh(-input) == -lanes[lane])
            }
            x += 0.0173
        }
        #expect(worstUlps <= 3, "worst error \(worstUlps) ulp")
        let special = Kernels.tanh(
            Kernels.Vector([-.infinity, .infinity, .nan, 0, -0.0, 0.625, -0.625, 100, -100, 1e-20, 9, 10, 0.6249, 0.6251, 3, 4]))
        #expect(special[0] == -1 && special[1] == 1 && special[2].isNaN && special[3] == 0 && special[7] == 1 && special[8] == -1)
        #expect(special[9] == 1e-20)
    }

    /// The vector erf against libm's double `erf`: within 8 ulp (Eigen's rational form; the
    /// worst cases lie near |x| ≈ 3.6, where erf is within 10⁻⁶ of ±1) from −6 to 6 and on
    /// tiny inputs, odd, ±1 at ±∞, NaN kept; GELU built on it within 10⁻⁶·(1 + |x|) of the
    /// exact 0.5·x·(1 + erf(x/√2)).
    @Test func vectorErfAndGELUMatchLibm() {
        var worstUlps: Float = 0
        var worstGELU: Double = 0
        var inputs: [Float] = []
        var x: Float = -6
        while x < 6 {
            inputs.append(x)
            x += 0.000_37
        }
        inputs += (0..<200).map { Float(pow(10, -30 + Double($0) * 0.15)) }
        for start in stride(from: 0, to: inputs.count, by: 16) {
            let chunk = Array(inputs[start..<min(start + 16, inputs.count)]) + Array(repeating: 0, count: max(0, start + 16 - inputs.count))
            let lanes = Kernels.erf(Kernels.Vector(chunk))
            let negated = Kernels.erf(-Kernels.Vector(chunk))
            let gelus = Kernels.gelu(Kernels.Vector(chunk))
            for (lane, input) in chunk.enumerated() {
                let exact = Foundation.erf(Double(input))
                worstUlps = max(worstUlps, Float(abs(Double(lanes[lane]) - exact)) / Float(exact).magnitude.ulp)
                #expect(negated[lane] == -lanes[lane])
                let exactGELU = 0.5 * Double(input) * (1 + Foundation.erf(Double(input) / 2.0.squareRoot()))
                worstGELU = max(worstGELU, abs(Double(gelus[lane]) - exactGELU) / (1 + abs(Double(input))))
            }
        }
        #expect(worstUlps <= 8, "worst erf error \(worstUlps) ulp")
        #expect(worstGELU <= 1e-6, "worst GELU error \(worstGELU)")
        let special = Kernels.erf(Kernels.Vector([-.infinity, .infinity, .nan, 0, -0.0, 4, -4, 100, 1e-38, 3.9, 0, 0, 0, 0, 0, 0]))
        #expect(special[0] == -1 && special[1] == 1 && special[2].isNaN && special[3] == 0 && special[7] == 1)
        #expect(special[4] == 0 && special[4].sign == .minus)
        #expect(Kernels.gelu(Kernels.Vector(repeating: .nan))[0].isNaN)
    }

    /// The vector σ against 1/(1 + expf(−x)): within 2 ulp from −20 to 20 (beyond, within 1e-9
    /// absolute), and the scalar form equal to the vector's lane (the GRU router's cell and the
    /// tape's σ must agree).
    @Test func vectorSigmoidMatchesLibm() {
        var worstUlps: Float = 0
        var x: Float = -40
        while x < 40 {
            let inputs = (0..<16).map { x + Float($0) * 0.0011 }
            let lanes = Kernels.sigmoid(Kernels.Vector(inputs))
            for (lane, input) in inputs.enumerated() {
                let exact = Float(1 / (1 + Foundation.exp(-Double(input))))
                if abs(input) < 20 {
                    worstUlps = max(worstUlps, abs(lanes[lane] - exact) / exact.ulp)
                } else {
                    #expect(abs(lanes[lane] - exact) <= 1e-9 || abs(lanes[lane] - exact) <= 2 * exact.ulp)
                }
                #expect(Kernels.sigmoid(input) == lanes[lane])
            }
            x += 0.0237
        }
        #expect(worstUlps <= 2, "worst error \(worstUlps) ulp")
        #expect(Kernels.sigmoid(-Float.infinity) == 0 && Kernels.sigmoid(Float.infinity) == 1 && Kernels.sigmoid(Float.nan).isNaN)
    }

    /// `Kernels.apply` gives every value what the vector function gives it in any lane, for
    /// buffers with and without a tail (the tape's GELU and the routers' share it).
    @Test(arguments: [1, 15, 16, 17, 40, 64]) func applyEqualsLanewise(count: Int) {
        var g = SeededGenerator(seed: UInt64(count))
        var values = (0..<count).map { _ in g.nextNormal() * 3 }
        let expected = values.map { Kernels.gelu(Kernels.Vector(repeating: $0))[0] }
        values.withUnsafeMutableBufferPointer { Kernels.apply(Kernels.gelu, to: $0.baseAddress!, count: count) }
        #expect(values.map(\.bitPattern) == expected.map(\.bitPattern))
    }

    /// Rows long enough for the vector path (with a scalar tail), against the definition.
    @Test func longSoftmaxMatchesDefinition() {
        var g = SeededGenerator(seed: 21)
        var row = (0..<37).map { _ in g.nextNormal() * 4 }
        let reference = row.map { expf($0 - row.max()!) }
        let total = reference.reduce(0, +)
        row.withUnsafeMutableBufferPointer { Kernels.softmax($0.baseAddress!, count: $0.count) }
        for (p, e) in zip(row, reference) { #expect(abs(p - e / total) < 1e-6) }
        var mixture = (0..<20).map { $0 % 5 == 0 ? Float(0) : -.infinity }
        mixture.withUnsafeMutableBufferPointer { Kernels.softmax($0.baseAddress!, count: $0.count) }
        #expect(mixture == (0..<20).map { $0 % 5 == 0 ? 0.25 : 0 })
    }

    /// Every row length from 1 to 50 (no full vector, full vectors only, full vectors and a
    /// partial one), scaled, against the definition in Double; the entries past the row are
    /// never touched (the partial vector neither reads nor writes past it).
    @Test func softmaxOfEveryLengthMatchesDefinitionAndStaysInsideTheRow() {
        var g = SeededGenerator(seed: 5)
        for n in 1...50 {
            let scale: Float = 0.17
            let values = (0..<n).map { _ in g.nextNormal() * 6 }
            var row = values + [Float](repeating: 7.5, count: 17)
            row.withUnsafeMutableBufferPointer { Kernels.softmax($0.baseAddress!, count: n, scale: scale) }
            let largest = values.map { Double($0 * scale) }.max()!
            let exps = values.map { Foundation.exp(Double($0 * scale) - largest) }
            let total = exps.reduce(0, +)
            for i in 0..<n { #expect(abs(Double(row[i]) - exps[i] / total) < 2e-7, "n \(n) entry \(i)") }
            #expect(row[n...].allSatisfy { $0 == 7.5 }, "n \(n) wrote past its row")
        }
        // A masked tail (−∞ in the partial vector) is exactly 0; a NaN makes the row NaN.
        var masked = (0..<21).map { $0 < 18 ? Float($0 % 3) : -.infinity }
        masked.withUnsafeMutableBufferPointer { Kernels.softmax($0.baseAddress!, count: $0.count) }
        #expect(masked[18...].allSatisfy { $0 == 0 } && abs(masked.reduce(0, +) - 1) < 1e-6)
        var broken: [Float] = [1, 2, .nan, 3]
        broken.withUnsafeMutableBufferPointer { Kernels.softmax($0.baseAddress!, count: $0.count) }
        #expect(broken.allSatisfy { $0.isNaN })
    }

    /// The vector σ against 1 / (1 + expf(−x)): within 2 ulp (or 1e-12 absolute where σ is
    /// tiny) from −90 to 90; 0 and 1 at ∓∞, NaN kept, and the scalar form equal to the lane.
    @Test func vectorSigmoidMatchesDefinition() {
        var worstUlps: Float = 0
        var x: Float = -90
        while x < 90 {
            let inputs = (0..<16).map { x + Float($0) * 0.0011 }
            let lanes = Kernels.sigmoid(Kernels.Vector(inputs))
            for (lane, input) in inputs.enumerated() {
                let exact = Float(1 / (1 + Foundation.exp(-Double(input))))
                if abs(lanes[lane] - exact) > 1e-12 { worstUlps = max(worstUlps, abs(lanes[lane] - exact) / exact.ulp) }
                #expect(Kernels.sigmoid(input) == lanes[lane])
            }
            x += 0.0437
        }
        #expect(worstUlps <= 2, "worst error \(worstUlps) ulp")
        let special = Kernels.sigmoid(Kernels.Vector([-.infinity, .infinity, .nan, 0, 200, -200, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]))
        #expect(special[0] == 0 && special[1] == 1 && special[2].isNaN && special[3] == 0.5 && special[4] == 1 && special[5] == 0)
    }

    /// Softmax written out lane by lane as the vector passes run it: x·scale, its maximum,
    /// e = exp(x·scale − max) with the vector exp, the sums of lane j (entries j, j + 16, …)
    /// in order, their lanes added in order, and e · (1 / total). Bit for bit what `softmax`
    /// should give, for checking its fast paths exactly rather than to a tolerance.
    func laneBylaneSoftmax(_ row: [Float], scale: Float, exp: (Kernels.Vector) -> Kernels.Vector = Kernels.exp) -> [Float] {
        let scaled = row.map { $0 * scale }
        let shift = scaled.max()!
        let e = scaled.map { exp(Kernels.Vector(repeating: $0 - shift))[0] }
        var lanes = [Float](repeating: 0, count: Kernels.width)
        for (i, value) in e.enumerated() { lanes[i % Kernels.width] += value }
        let inverse = 1 / lanes.dropFirst().reduce(lanes[0], +)
        return e.map { $0 * inverse }
    }

    /// `softmax` (its one-vector path for rows under 16 included) and causal attention's row
    /// softmax (the last partial vector read as the overlapping vector ending at the row, with
    /// `fusedExp`; rows under 16 go to `softmax`) equal the lane-by-lane softmax with their exp
    /// bit for bit at every row length from 1 to 80 (scale 0.17, and 1 as a router calls it);
    /// the causal row is 0 from its end to the row's length, and neither writes past that.
    @Test func softmaxFastPathsEqualLaneByLaneSoftmaxExactly() {
        var g = SeededGenerator(seed: 31)
        for n in 1...80 {
            for scale: Float in [0.17, 1] {
                let values = (0..<n).map { _ in g.nextNormal() * 6 }
                let expected = laneBylaneSoftmax(values, scale: scale)
                var row = values + [Float](repeating: 7.5, count: 17)
                row.withUnsafeMutableBufferPointer { Kernels.softmax($0.baseAddress!, count: n, scale: scale) }
                #expect(row[..<n].map(\.bitPattern) == expected.map(\.bitPattern), "softmax n \(n) scale \(scale)")
                #expect(row[n...].allSatisfy { $0 == 7.5 })
                let length = n + 9
                var causal = values + [Float](repeating: 3, count: 9) + [Float](repeating: 7.5, count: 17)
                causal.withUnsafeMutableBufferPointer { Kernels.causalSoftmax($0.baseAddress!, count: n, length: length, scale: scale) }
                let causalExpected = n < Kernels.width ? expected : laneBylaneSoftmax(values, scale: scale, exp: Kernels.fusedExp)
                #expect(causal[..<n].map(\.bitPattern) == causalExpected.map(\.bitPattern), "causal n \(n) scale \(scale)")
                #expect(causal[n..<length].allSatisfy { $0 == 0 } && causal[length...].allSatisfy { $0 == 7.5 })
            }
        }
        // A NaN anywhere in a causal row makes the row NaN, in the overlapping last vector too.
        for position in [0, 17, 19] {
            var row = (0..<20).map { Float($0) / 7 }
            row[position] = .nan
            row.withUnsafeMutableBufferPointer { Kernels.causalSoftmax($0.baseAddress!, count: 20, length: 20, scale: 0.5) }
            #expect(row.allSatisfy { $0.isNaN }, "NaN at \(position)")
        }
    }

    /// RoPE's vector path (half a head a whole number of vectors: moescope's D = 32, and 64)
    /// against the pair-by-pair rotation, bit for bit, forwards and inverse; a head of 8 takes
    /// the scalar path and is checked the same way.
    @Test(arguments: [32, 64, 8]) func ropeEqualsPairByPairRotation(headDim: Int) {
        let rope = RotaryEmbedding(headDim: headDim, context: 40, theta: 10_000)
        var g = SeededGenerator(seed: 12)
        let heads = 3
        let half = headDim / 2
        for inverse in [false, true] {
            for position in [0, 1, 17, 39] {
                let row = (0..<(heads * headDim)).map { _ in g.nextNormal() }
                var rotated = row
                rotated.withUnsafeMutableBufferPointer {
                    rope.apply($0.baseAddress!, numHeads: heads, position: position, inverse: inverse)
                }
                var expected = row
                for h in 0..<heads {
                    for i in 0..<half {
                        let (a, b) = (row[h * headDim + i], row[h * headDim + i + half])
                        let c = rope.cosines[position * half + i]
                        let s = inverse ? -rope.sines[position * half + i] : rope.sines[position * half + i]
                        expected[h * headDim + i] = a * c - b * s
                        expected[h * headDim + i + half] = b * c + a * s
                    }
                }
                #expect(rotated.map(\.bitPattern) == expected.map(\.bitPattern), "D \(headDim) inverse \(inverse) position \(position)")
            }
        }
    }

    @Test func rmsNormMatchesDefinition() {
        let x = Tensor(shape: [2, 20], scalars: (0..<40).map { Float($0) - 13 })
        let gain = (0..<20).map { 1 + Float($0) / 10 }
        var y = [Float](repeating: 0, count: 40)
        var rstd = [Float](repeating: 0, count: 2)
        x.scalars.withUnsafeBufferPointer { xp in
            gain.withUnsafeBufferPointer { gp in
                y.withUnsafeMutableBufferPointer { yp in
                    rstd.withUnsafeMutableBufferPointer { rp in
                        Kernels.rmsNorm(
                            xp.baseAddress!, gain: gp.baseAddress!, yp.baseAddress!, rows: 2, cols: 20, eps: 1e-5, rstd: rp.baseAddress!)
                    }
                }
            }
        }
        for r in 0..<2 {
            let row = Array(x.row(r))
            let scale = 1 / (row.map { $0 * $0 }.reduce(0, +) / 20 + 1e-5).squareRoot()
            #expect(abs(rstd[r] - scale) < 1e-6)
            for i in 0..<20 { #expect(abs(y[r * 20 + i] - row[i] * scale * gain[i]) < 1e-5) }
        }
    }

    @Test func topKOrdersByProbabilityAndBreaksTiesTowardLowerIndex() {
        #expect(topK([0.1, 0.4, 0.1, 0.4][...], k: 2) == [1, 3])
        #expect(topK([0.25, 0.25, 0.25, 0.25][...], k: 3) == [0, 1, 2])
        #expect(topK([0.0, 0.9, 0.1][...], k: 1) == [1])
    }

    @Test func seededGeneratorIsReproducible() {
        var a = SeededGenerator(seed: 42)
        var b = SeededGenerator(seed: 42)
        var c = SeededGenerator(seed: 43)
        let xa = (0..<10).map { _ in a.nextNormal() }
        let xb = (0..<10).map { _ in b.nextNormal() }
        #expect(xa == xb)
        #expect(xa != (0..<10).map { _ in c.nextNormal() })
    }
}
