import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The numeric kernels everything else is built from. Matrix products run on a register-tiled
/// SIMD16 micro-kernel (6 rows x 16 columns: on AVX2 that is 12 ymm accumulators, the classic
/// shape); row operations are SIMD over the row. All matrices are row-major.
public enum Kernels {
    public typealias Vector = SIMD16<Float>
    static let width = 16

    @inline(__always) static func load(_ p: UnsafePointer<Float>) -> Vector {
        UnsafeRawPointer(p).loadUnaligned(as: Vector.self)
    }
    @inline(__always) static func store(_ v: Vector, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vector.self)
    }

    // MARK: Matrix products

    /// Threads for large products: `MOESCOPE_THREADS`, else one. Measured on the 2-core
    /// machine, splitting products over both cores nearly doubles a lone GEMM but leaves
    /// training throughput unchanged (the rest of a step is single-threaded, and the idle
    /// worker slows it), so one thread is the default.
    public static let threads: Int = {
        max(1, ProcessInfo.processInfo.environment["MOESCOPE_THREADS"].flatMap(Int.init) ?? 1)
    }()

    /// C[m×n] = A[m×k] · B[k×n]  (or `+=` when `accumulate`). Products of at least ~4 M
    /// multiply-adds split their rows over `threads` cores (each C entry is still computed by
    /// one thread in one order, so results do not depend on the thread count); smaller ones
    /// stay on one core, where the hand-off would cost more than it saves.
    public static func matmul(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>,
                              m: Int, k: Int, n: Int, accumulate: Bool = false, threads available: Int = threads) {
        let parts = threadsUsed(m: m, k: k, n: n, threads: available)
        guard parts > 1 else {
            return matmulSingleThread(a, b, c, m: m, k: k, n: n, accumulate: accumulate)
        }
        // Shares are whole 96-row blocks, so every row meets the micro-kernel exactly as it
        // would on one thread (rows outside a 6-row group are summed in another order).
        let share = ((m + parts - 1) / parts + blockRows - 1) / blockRows * blockRows
        let (aBits, bBits, cBits) = (UInt(bitPattern: a), UInt(bitPattern: b), UInt(bitPattern: c))
        DispatchQueue.concurrentPerform(iterations: parts) { part in
            let first = part * share, rows = min(share, m - first)
            guard rows > 0 else { return }
            matmulSingleThread(UnsafePointer(bitPattern: aBits)! + first * k, UnsafePointer(bitPattern: bBits)!,
                               UnsafeMutablePointer(bitPattern: cBits)! + first * n, m: rows, k: k, n: n, accumulate: accumulate)
        }
    }

    /// Rows per cache block of A (and per thread share).
    static let blockRows = 96

    /// How many threads `matmul` uses for an m×k · k×n product.
    public static func threadsUsed(m: Int, k: Int, n: Int, threads available: Int = threads) -> Int {
        m * k * n >= 1 << 22 ? max(1, min(available, m / blockRows)) : 1
    }

    static func matmulSingleThread(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>,
                                   m: Int, k: Int, n: Int, accumulate: Bool) {
        guard m > 0, n > 0 else { return }
        if k == 0 {
            if !accumulate { c.update(repeating: 0, count: m * n) }
            return
        }
        let fullColumns = n / width * width, tail = n - fullColumns
        // Ragged right edge (e.g. 8 experts): copy it once into a zero-padded 16-wide panel so
        // the same micro-kernel serves every width.
        var paddedB = [Float](repeating: 0, count: tail > 0 ? k * width : 0)
        for p in 0..<(tail > 0 ? k : 0) { for q in 0..<tail { paddedB[p * width + q] = b[p * n + fullColumns + q] } }
        // Rows go in blocks whose slice of A stays in L1/L2 while every panel of B streams past
        // it; without the blocking a wide B (the LM head) re-reads all of A once per panel.
        var row = 0
        while row < m {
            let rows = min(blockRows, m - row)
            let aBlock = a + row * k, cBlock = c + row * n
            var j = 0
            while j < fullColumns {
                panel(aBlock, lda: k, b + j, ldb: n, cBlock + j, ldc: n, m: rows, k: k, accumulate: accumulate)
                j += width
            }
            if tail > 0 {
                var paddedC = [Float](repeating: 0, count: rows * width)
                if accumulate { for i in 0..<rows { for q in 0..<tail { paddedC[i * width + q] = cBlock[i * n + fullColumns + q] } } }
                paddedB.withUnsafeBufferPointer { pb in
                    paddedC.withUnsafeMutableBufferPointer { pc in
                        panel(aBlock, lda: k, pb.baseAddress!, ldb: width, pc.baseAddress!, ldc: width,
                              m: rows, k: k, accumulate: accumulate)
                    }
                }
                for i in 0..<rows { for q in 0..<tail { cBlock[i * n + fullColumns + q] = paddedC[i * width + q] } }
            }
            row += rows
        }
    }

    /// One 16-column panel of C for all m rows, six rows at a time.
    @inline(__always)
    static func panel(_ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
                      _ c: UnsafeMutablePointer<Float>, ldc: Int, m: Int, k: Int, accumulate: Bool) {
        var i = 0
        while i + 6 <= m {
            let a0 = a + i * lda, a1 = a0 + lda, a2 = a1 + lda, a3 = a2 + lda, a4 = a3 + lda, a5 = a4 + lda
            let cRow = c + i * ldc
            var c0 = Vector(), c1 = Vector(), c2 = Vector(), c3 = Vector(), c4 = Vector(), c5 = Vector()
            if accumulate {
                c0 = load(cRow); c1 = load(cRow + ldc); c2 = load(cRow + 2 * ldc)
                c3 = load(cRow + 3 * ldc); c4 = load(cRow + 4 * ldc); c5 = load(cRow + 5 * ldc)
            }
            var bp = b
            for p in 0..<k {
                let bv = load(bp)
                c0.addProduct(Vector(repeating: a0[p]), bv)
                c1.addProduct(Vector(repeating: a1[p]), bv)
                c2.addProduct(Vector(repeating: a2[p]), bv)
                c3.addProduct(Vector(repeating: a3[p]), bv)
                c4.addProduct(Vector(repeating: a4[p]), bv)
                c5.addProduct(Vector(repeating: a5[p]), bv)
                bp += ldb
            }
            store(c0, cRow); store(c1, cRow + ldc); store(c2, cRow + 2 * ldc)
            store(c3, cRow + 3 * ldc); store(c4, cRow + 4 * ldc); store(c5, cRow + 5 * ldc)
            i += 6
        }
        while i < m {
            let aRow = a + i * lda, cRow = c + i * ldc
            // Two accumulators hide FMA latency on the single-row path (decode is m = 1).
            var even = accumulate ? load(cRow) : Vector(), odd = Vector()
            var p = 0, bp = b
            while p + 2 <= k {
                even.addProduct(Vector(repeating: aRow[p]), load(bp))
                odd.addProduct(Vector(repeating: aRow[p + 1]), load(bp + ldb))
                bp += 2 * ldb; p += 2
            }
            if p < k { even.addProduct(Vector(repeating: aRow[p]), load(bp)) }
            store(even + odd, cRow)
            i += 1
        }
    }

    /// C[m×n] = A[m×k] · B[n×k]ᵀ as one dot product per entry: no packing, so it wins when A
    /// has a handful of rows (decoding one token through a router), where copying B would
    /// cost more than the arithmetic.
    public static func matmulTransposedB(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>,
                                         m: Int, k: Int, n: Int) {
        for i in 0..<m {
            for j in 0..<n { c[i * n + j] = dot(a + i * k, b + j * k, count: k) }
        }
    }

    // MARK: Vector operations

    public static func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, count n: Int) -> Float {
        var s0 = Vector(), s1 = Vector()
        var i = 0
        while i + 2 * width <= n {
            s0.addProduct(load(x + i), load(y + i))
            s1.addProduct(load(x + i + width), load(y + i + width))
            i += 2 * width
        }
        if i + width <= n { s0.addProduct(load(x + i), load(y + i)); i += width }
        var total = (s0 + s1).sum()
        while i < n { total += x[i] * y[i]; i += 1 }
        return total
    }

    /// y += alpha · x
    public static func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count n: Int) {
        let va = Vector(repeating: alpha)
        var i = 0
        while i + width <= n {
            var v = load(y + i); v.addProduct(va, load(x + i)); store(v, y + i); i += width
        }
        while i < n { y[i] += alpha * x[i]; i += 1 }
    }

    public static func sumOfSquares(_ x: UnsafePointer<Float>, count n: Int) -> Float { dot(x, x, count: n) }

    /// In-place softmax of one row. Entries of −∞ get probability exactly 0 (the Hash router
    /// relies on that to express a one-hot mixture as logits).
    public static func softmax(_ x: UnsafeMutablePointer<Float>, count n: Int) {
        var maxValue = -Float.infinity
        for i in 0..<n { maxValue = max(maxValue, x[i]) }
        var total: Float = 0
        for i in 0..<n { let e = expf(x[i] - maxValue); x[i] = e; total += e }
        let inverse = 1 / total
        for i in 0..<n { x[i] *= inverse }
    }

    /// y = x / sqrt(mean(x²) + eps) ⊙ gain, row by row. Returns nothing; `rstd` (one per row)
    /// is written when given, for the backward pass.
    public static func rmsNorm(_ x: UnsafePointer<Float>, gain: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                               rows: Int, cols: Int, eps: Float, rstd: UnsafeMutablePointer<Float>? = nil) {
        for r in 0..<rows {
            let xr = x + r * cols, yr = y + r * cols
            let inverse = 1 / (sumOfSquares(xr, count: cols) / Float(cols) + eps).squareRoot()
            rstd?[r] = inverse
            let vs = Vector(repeating: inverse)
            var i = 0
            while i + width <= cols { store(load(xr + i) * vs * load(gain + i), yr + i); i += width }
            while i < cols { yr[i] = xr[i] * inverse * gain[i]; i += 1 }
        }
    }

    @inline(__always) public static func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }
    @inline(__always) public static func silu(_ x: Float) -> Float { x / (1 + expf(-x)) }
    /// Exact (erf) GELU, as PyTorch's `nn.GELU()` default.
    @inline(__always) public static func gelu(_ x: Float) -> Float { 0.5 * x * (1 + erff(x * 0.70710678118654752)) }
}

extension Tensor {
    /// self[rows×k] · other[k×n]
    public func matmul(_ other: Tensor) -> Tensor {
        precondition(cols == other.rows || (other.shape.count == 2 && cols == other.shape[0]),
                     "matmul shapes \(shape) · \(other.shape)")
        return Tensor.matmul(self, rhs: other.scalars, n: other.cols)
    }

    /// self[m×k] · B[k×n], with B given as raw row-major scalars.
    static func matmul(_ lhs: Tensor, rhs: [Float], n: Int) -> Tensor {
        let m = lhs.rows, k = lhs.cols
        precondition(rhs.count == k * n)
        var out = Tensor(zeros: [m, n])
        lhs.scalars.withUnsafeBufferPointer { a in
            rhs.withUnsafeBufferPointer { b in
                out.scalars.withUnsafeMutableBufferPointer { c in
                    Kernels.matmul(a.baseAddress!, b.baseAddress!, c.baseAddress!, m: m, k: k, n: n)
                }
            }
        }
        return out
    }

    /// Transpose of a 2-D tensor.
    public func transposed() -> Tensor {
        let r = rows, c = cols
        var out = [Float](repeating: 0, count: r * c)
        scalars.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                // 16×16 tiles keep both the reads and the writes within a few cache lines.
                let tile = 16
                for i0 in stride(from: 0, to: r, by: tile) {
                    for j0 in stride(from: 0, to: c, by: tile) {
                        for i in i0..<min(i0 + tile, r) { for j in j0..<min(j0 + tile, c) { dst[j * r + i] = src[i * c + j] } }
                    }
                }
            }
        }
        return Tensor(shape: [c, r], scalars: out)
    }
}
