import CMemoryHints
import Foundation

/// A row-major [rows × columns] weight matrix as its file stores it (F32, F16 or BF16), read in
/// place by `Kernels.multiply`: 16-bit weights are widened to Float in registers, never
/// decoded to a Float copy first, so a decoded token reads each weight's stored bytes once.
/// Unchecked-Sendable: a read-only view of memory its owner (a mapped file) keeps alive.
public struct StoredMatrix: @unchecked Sendable {
    public let base: UnsafeRawPointer
    public let dtype: SafeTensorsDType
    public let rows: Int
    public let columns: Int

    public init(base: UnsafeRawPointer, dtype: SafeTensorsDType, rows: Int, columns: Int) {
        (self.base, self.dtype, self.rows, self.columns) = (base, dtype, rows, columns)
    }

    /// Bytes a full pass over the matrix reads.
    public var byteCount: Int { rows * columns * dtype.byteSize }
    var rowBytes: Int { columns * dtype.byteSize }
}

extension MappedTensor {
    /// The tensor, flattened to [rows × columns], as the stored-dtype kernels read it.
    public var stored: StoredMatrix { StoredMatrix(base: bytes, dtype: dtype, rows: rows, columns: columns) }
}

/// y[n × rows] = x[n × columns] · Wᵀ: one product for `Kernels.multiply`.
public struct WeightProduct: @unchecked Sendable {
    public var weight: StoredMatrix
    public var input: UnsafePointer<Float>  // n × weight.columns, row-major
    public var output: UnsafeMutablePointer<Float>  // n × weight.rows, row-major
    public var count: Int  // n

    public init(weight: StoredMatrix, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, count: Int) {
        (self.weight, self.input, self.output, self.count) = (weight, input, output, count)
    }
}

extension Kernels {
    /// Columns per step of the stored-dtype kernels: one 64-byte load of 16-bit weights holds 32.
    static let pairChunk = 32
    /// Up to this many input rows (a decoded token, a prompt of up to 128 tokens) every output
    /// is a dot product over the stored row: a group of four rows (16 KB of BF16 at width 2048)
    /// stays in L1 while the inputs pass it two at a time, so W is still read from memory once.
    /// More rows widen blocks of W to Float for the packed GEMM. The dot path was measured
    /// faster up to here (OLMoE width, one thread, release, load ≈ 11: a 128-token prompt
    /// prefilled at 29–30 tokens/s against 19–23 through the GEMM in BF16, 37–39 against 23–29
    /// in F32; 32 tokens: 21–22 against 10–17); above it the GEMM is kept, unmeasured.
    public static let fewInputRows = 128

    /// Runs every product, their rows split into units of about `unitBytes`, the units into one
    /// contiguous share per thread (`UnitShares`; on two cores the second share runs on
    /// `HelperThread`). Each output is computed by the same instructions in the same order
    /// whichever thread runs its unit, so the result is bit-identical for any thread count (a
    /// test holds it).
    ///
    /// 16-bit weights are read as 32-bit words of two neighbours: the even column is the low
    /// half, the odd one the high half. A BF16 value is the top half of a Float, so the even
    /// lane is `word << 16` and the odd lane `word & 0xFFFF0000` (the "shift-and-FMA" form of
    /// AVX-512's `vdpbf16ps`; that instruction multiplies BF16 by BF16, so it would round the
    /// Float inputs to 8 significant bits and break parity with the F32 reference; from cache
    /// this kernel runs at 2.4–2.8× the rate one core reads memory, see README); an F16 value widens by moving its
    /// exponent and mantissa into place and rescaling by 2¹¹². The input is permuted once per
    /// product to match (each 32-column chunk as its 16 even columns, then its 16 odd ones), so
    /// the inner loop is one load, two lane operations and two FMAs per 32 weights.
    /// `unitBytes` and `minimumBytesPerThread` set how finely the rows are split (512 KB units:
    /// with 128 KB units dealt out in turn, each thread hinted the next two row groups, 32 KB,
    /// into its own cache while the other thread took that unit, and two threads streamed at
    /// 83 % of a plain read; in contiguous shares a unit is only what a thread that finished
    /// early can take from the other; tests make them small to split small matrices); results
    /// do not depend on them either.
    public static func multiply(
        _ products: [WeightProduct], threads available: Int = threads,
        unitBytes: Int = 524_288, minimumBytesPerThread: Int = 524_288
    ) {
        let work = products.filter { $0.count > 0 && $0.weight.rows > 0 }
        guard !work.isEmpty else { return }
        // Inputs in the pair layout their weights' loads produce, each laid out once: products
        // that read the same input (q, k and v; an expert's gate and up) share its copy.
        var laidOut: [(input: UnsafePointer<Float>, count: Int, columns: Int, interleaved: Bool, paired: UnsafeMutablePointer<Float>)] = []
        let inputs = work.map { product -> UnsafeMutablePointer<Float> in
            let k = product.weight.columns
            let n = product.count
            let interleaved = product.weight.dtype != .f32
            if let same = laidOut.first(where: {
                $0.input == product.input && $0.count == n && $0.columns == k && $0.interleaved == interleaved
            }) {
                return same.paired
            }
            let paired = Kernels.allocateLineAligned(n * k)
            for r in 0..<n { pairLayout(product.input + r * k, into: paired + r * k, columns: k, interleaved: interleaved) }
            laidOut.append((product.input, n, k, interleaved, paired))
            return paired
        }
        defer { for copy in laidOut { copy.paired.deallocate() } }

        // Units of ~`unitBytes` of weights, whole multiples of four rows (the kernel's row group).
        var units: [(product: Int, rows: Range<Int>, bytes: Int)] = []
        for (i, product) in work.enumerated() {
            let w = product.weight
            let step = max(4, (unitBytes / max(1, w.rowBytes)) / 4 * 4)
            for first in stride(from: 0, to: w.rows, by: step) {
                let rows = first..<min(first + step, w.rows)
                // More input rows make a unit more arithmetic on the same bytes.
                units.append((i, rows, rows.count * w.rowBytes * max(1, product.count / 8)))
            }
        }
        let totalBytes = units.reduce(0) { $0 + $1.bytes }
        // Below ~512 KB a hand-off to another thread costs more than it saves.
        let parts = max(1, min(available, units.count, totalBytes / max(1, minimumBytesPerThread)))
        let call = MultiplyCall(work: work, inputs: inputs, units: units, parts: parts)
        defer { call.release() }
        guard parts > 1 else {
            call.runShare(0)
            return
        }
        // Two cores: the helper thread, already spinning between the products of a token,
        // takes the second share (a dispatch-queue wake-up per product cost more).
        if parts == 2, let helper = HelperThread.shared {
            helper.run(
                Unmanaged.passUnretained(call).toOpaque(),
                { call, side in
                    Unmanaged<MultiplyCall>.fromOpaque(call)._withUnsafeGuaranteedRef { $0.runShare(side) }
                })
            return
        }
        let shared = UncheckedSendable(value: call)
        DispatchQueue.concurrentPerform(iterations: parts) { shared.value.runShare($0) }
    }

    /// One `multiply` call's units, laid out for the threads: plain buffers (no reference
    /// counts touched by two cores) and the shares the units are taken from.
    final class MultiplyCall: @unchecked Sendable {
        let work: UnsafeMutableBufferPointer<WeightProduct>
        let inputs: UnsafeMutableBufferPointer<UnsafeMutablePointer<Float>>
        let units: UnsafeMutableBufferPointer<(product: Int, rows: Range<Int>)>
        let shares: UnitShares

        init(
            work: [WeightProduct], inputs: [UnsafeMutablePointer<Float>], units: [(product: Int, rows: Range<Int>, bytes: Int)], parts: Int
        ) {
            self.work = .allocate(capacity: work.count)
            _ = self.work.initialize(from: work)
            self.inputs = .allocate(capacity: inputs.count)
            _ = self.inputs.initialize(from: inputs)
            self.units = .allocate(capacity: units.count)
            _ = self.units.initialize(from: units.map { ($0.product, $0.rows) })
            shares = UnitShares(bytes: units.map(\.bytes), parts: parts)
        }

        func release() {
            work.deallocate()
            inputs.deallocate()
            units.deallocate()
        }

        /// Runs share `side`'s units, then whatever is left of the others'.
        func runShare(_ side: Int) {
            while let u = shares.take(side) {
                let unit = units[u]
                let product = work[unit.product]
                multiplyRows(product.weight, rows: unit.rows, input: inputs[unit.product], count: product.count, output: product.output)
            }
        }
    }

    /// Copies one input row into the order `multiplyRows` reads it: each full chunk of 32 as
    /// its even columns then its odd ones (for 16-bit weights; one two-register permute per
    /// chunk), the tail as it is.
    static func pairLayout(_ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, columns k: Int, interleaved: Bool) {
        let chunks = interleaved ? k / pairChunk : 0
        for c in 0..<chunks {
            let chunk = UnsafeRawPointer(x + c * pairChunk).loadUnaligned(as: SIMD32<Float>.self)
            store(chunk.evenHalf, out + c * pairChunk)
            store(chunk.oddHalf, out + c * pairChunk + width)
        }
        let done = chunks * pairChunk
        (out + done).update(from: x + done, count: k - done)
    }

    /// Rows `rows` of y = x·Wᵀ for `n` input rows already in the pair layout.
    static func multiplyRows(
        _ w: StoredMatrix, rows: Range<Int>, input: UnsafePointer<Float>, count n: Int,
        output: UnsafeMutablePointer<Float>
    ) {
        if n <= fewInputRows {
            switch w.dtype {
            case .f32: dotRows(F32Weights.self, w, rows: rows, input: input, count: n, output: output)
            case .bf16: dotRows(BF16Weights.self, w, rows: rows, input: input, count: n, output: output)
            case .f16: dotRows(F16Weights.self, w, rows: rows, input: input, count: n, output: output)
            case .i32, .i64: preconditionFailure("SafeTensorsFile.mapped maps float tensors only")
            }
            return
        }
        let k = w.columns
        if w.dtype == .f32 {
            let rowsBase = w.base.assumingMemoryBound(to: Float.self) + rows.lowerBound * k
            gemm(
                m: n, n: rows.count, k: k, Operand(input, leadingDimension: k), Operand(rowsBase, leadingDimension: k).transposed,
                output + rows.lowerBound, ldc: w.rows, threads: 1)
            return
        }
        let block = Kernels.allocateLineAligned(rows.count * k)
        defer { block.deallocate() }
        for r in rows { widenRow(w, r, into: block + (r - rows.lowerBound) * k) }
        gemm(
            m: n, n: rows.count, k: k, Operand(input, leadingDimension: k), Operand(UnsafePointer(block), leadingDimension: k).transposed,
            output + rows.lowerBound, ldc: w.rows, threads: 1)
    }

    /// Row `r` of a 16-bit W as Floats, in the pair layout (for the packed GEMM).
    static func widenRow(_ w: StoredMatrix, _ r: Int, into out: UnsafeMutablePointer<Float>) {
        let k = w.columns
        let chunks = k / pairChunk
        let row = w.base + r * w.rowBytes
        for c in 0..<chunks {
            let (even, odd) = w.dtype == .bf16 ? BF16Weights.pair(row + c * 64) : F16Weights.pair(row + c * 64)
            store(even, out + c * pairChunk)
            store(odd, out + c * pairChunk + width)
        }
        for j in chunks * pairChunk..<k { out[j] = w.dtype == .bf16 ? BF16Weights.scalar(row, j) : F16Weights.scalar(row, j) }
    }

    /// Every output as a dot product over the stored row, four rows at a time (four
    /// independent FMA chains hide the latency; the loads of one step sit in one cache line
    /// per row) and two inputs at a time. A row's result does not depend on which group it
    /// falls in, nor an input's on whether it was paired: each is the same chain of FMAs.
    ///
    /// One input row (a decoded token) runs the rows one after another instead: the matrix is
    /// then one sequential read, where four rows at once are four streams a row apart.
    /// Measured on one thread (`bench --read-probe`, 1 GiB of BF16, 2,048 columns, on a host
    /// whose core reads 38–42 GB/s): four rows at once with their L2 hints 25–27 GB/s, one row
    /// at a time 33–34 (bound by its one FMA chain), two rows at once 17, two rows with the
    /// second half a row behind (2 KB apart, so not 4 KB aliases) 17–18; two threads 35–36
    /// against 42–45. Each row's chain is the one it has in a group.
    @inline(__always)
    static func dotRows<Format: WeightFormat>(
        _: Format.Type, _ w: StoredMatrix, rows: Range<Int>, input: UnsafePointer<Float>,
        count n: Int, output: UnsafeMutablePointer<Float>
    ) {
        let k = w.columns
        let chunks = k / pairChunk
        let stride = w.rowBytes
        let ldo = w.rows
        let tailStart = chunks * pairChunk
        var r = rows.lowerBound
        while n > 1 && r + 4 <= rows.upperBound {
            let w0 = w.base + r * stride
            let w1 = w0 + stride
            let w2 = w1 + stride
            let w3 = w2 + stride
            // The next two groups' rows (past this range too, while inside the matrix) are asked
            // into L2 a line at a time as this group's lines are read, on the first pass over
            // the group: the hardware prefetcher alone starts afresh on every row (a new page)
            // and left this loop at 60–70 % of a plain read. Measured on one thread, 512 MB,
            // 2048 and 1024 columns: no hint 18.6 and 11.5 GB/s, the next group 22.2 and 21.3,
            // the next two 24–25 and 23 (plain read 25–27). A hint changes no arithmetic.
            let next = r + 8 <= w.rows ? w3 + stride : nil
            let afterNext = r + 12 <= w.rows ? w3 + 5 * stride : nil
            var t = 0
            // Two inputs at a time share each widened chunk of W.
            while t + 2 <= n {
                let x = input + t * k
                let z = x + k
                var a0 = Vector()
                var a1 = Vector()
                var a2 = Vector()
                var a3 = Vector()
                var b0 = Vector()
                var b1 = Vector()
                var b2 = Vector()
                var b3 = Vector()
                let (ahead, further) = t == 0 ? (next, afterNext) : (nil, nil)
                for c in 0..<chunks {
                    let xe = load(x + c * pairChunk)
                    let xo = load(x + c * pairChunk + width)
                    let ze = load(z + c * pairChunk)
                    let zo = load(z + c * pairChunk + width)
                    let offset = c * Format.chunkBytes
                    if let ahead { prefetchGroup(ahead, stride: stride, offset: offset, bytes: Format.chunkBytes) }
                    if let further { prefetchGroup(further, stride: stride, offset: offset, bytes: Format.chunkBytes) }
                    let (e0, o0) = Format.pair(w0 + offset)
                    a0.addProduct(e0, xe)
                    a0.addProduct(o0, xo)
                    b0.addProduct(e0, ze)
                    b0.addProduct(o0, zo)
                    let (e1, o1) = Format.pair(w1 + offset)
                    a1.addProduct(e1, xe)
                    a1.addProduct(o1, xo)
                    b1.addProduct(e1, ze)
                    b1.addProduct(o1, zo)
                    let (e2, o2) = Format.pair(w2 + offset)
                    a2.addProduct(e2, xe)
                    a2.addProduct(o2, xo)
                    b2.addProduct(e2, ze)
                    b2.addProduct(o2, zo)
                    let (e3, o3) = Format.pair(w3 + offset)
                    a3.addProduct(e3, xe)
                    a3.addProduct(o3, xo)
                    b3.addProduct(e3, ze)
                    b3.addProduct(o3, zo)
                }
                finishRows(Format.self, (a0, a1, a2, a3), rows: (w0, w1, w2, w3), x: x, from: tailStart, to: k, output + t * ldo + r)
                finishRows(Format.self, (b0, b1, b2, b3), rows: (w0, w1, w2, w3), x: z, from: tailStart, to: k, output + (t + 1) * ldo + r)
                t += 2
            }
            if t < n {
                let x = input + t * k
                var a0 = Vector()
                var a1 = Vector()
                var a2 = Vector()
                var a3 = Vector()
                let (ahead, further) = t == 0 ? (next, afterNext) : (nil, nil)
                for c in 0..<chunks {
                    let xe = load(x + c * pairChunk)
                    let xo = load(x + c * pairChunk + width)
                    let offset = c * Format.chunkBytes
                    if let ahead { prefetchGroup(ahead, stride: stride, offset: offset, bytes: Format.chunkBytes) }
                    if let further { prefetchGroup(further, stride: stride, offset: offset, bytes: Format.chunkBytes) }
                    let (e0, o0) = Format.pair(w0 + offset)
                    a0.addProduct(e0, xe)
                    a0.addProduct(o0, xo)
                    let (e1, o1) = Format.pair(w1 + offset)
                    a1.addProduct(e1, xe)
                    a1.addProduct(o1, xo)
                    let (e2, o2) = Format.pair(w2 + offset)
                    a2.addProduct(e2, xe)
                    a2.addProduct(o2, xo)
                    let (e3, o3) = Format.pair(w3 + offset)
                    a3.addProduct(e3, xe)
                    a3.addProduct(o3, xo)
                }
                finishRows(Format.self, (a0, a1, a2, a3), rows: (w0, w1, w2, w3), x: x, from: tailStart, to: k, output + t * ldo + r)
            }
            r += 4
        }
        while r < rows.upperBound {
            let w0 = w.base + r * stride
            for t in 0..<n {
                let x = input + t * k
                var a0 = Vector()
                for c in 0..<chunks {
                    let (e0, o0) = Format.pair(w0 + c * Format.chunkBytes)
                    a0.addProduct(e0, load(x + c * pairChunk))
                    a0.addProduct(o0, load(x + c * pairChunk + width))
                }
                var s0 = a0.sum()
                for j in tailStart..<k { s0 += Format.scalar(w0, j) * x[j] }
                output[t * ldo + r] = s0
            }
            r += 1
        }
    }
}

extension Kernels {
    /// Hints the `bytes` at `offset` of four rows `stride` apart, from `first`, into L2.
    @inline(__always)
    static func prefetchGroup(_ first: UnsafeRawPointer, stride: Int, offset: Int, bytes: Int) {
        var line = 0
        while line < bytes {
            moescope_prefetch_line(first + offset + line)
            moescope_prefetch_line(first + stride + offset + line)
            moescope_prefetch_line(first + 2 * stride + offset + line)
            moescope_prefetch_line(first + 3 * stride + offset + line)
            line += 64
        }
    }

    /// Four rows' sums: each accumulator's lanes, then the columns past the last full chunk.
    @inline(__always)
    static func finishRows<Format: WeightFormat>(
        _: Format.Type, _ sums: (Vector, Vector, Vector, Vector),
        rows w: (UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer),
        x: UnsafePointer<Float>, from tailStart: Int, to k: Int, _ y: UnsafeMutablePointer<Float>
    ) {
        var s0 = sums.0.sum()
        var s1 = sums.1.sum()
        var s2 = sums.2.sum()
        var s3 = sums.3.sum()
        for j in tailStart..<k {
            s0 += Format.scalar(w.0, j) * x[j]
            s1 += Format.scalar(w.1, j) * x[j]
            s2 += Format.scalar(w.2, j) * x[j]
            s3 += Format.scalar(w.3, j) * x[j]
        }
        y[0] = s0
        y[1] = s1
        y[2] = s2
        y[3] = s3
    }
}

/// How one stored dtype yields 32 columns as two Float vectors, and one element alone.
protocol WeightFormat {
    static var chunkBytes: Int { get }
    static func pair(_ p: UnsafeRawPointer) -> (Kernels.Vector, Kernels.Vector)
    static func scalar(_ row: UnsafeRawPointer, _ j: Int) -> Float
}

/// F32: the 32 columns in order (the input is not permuted for F32).
enum F32Weights: WeightFormat {
    static var chunkBytes: Int { 128 }
    @inline(__always) static func pair(_ p: UnsafeRawPointer) -> (Kernels.Vector, Kernels.Vector) {
        (p.loadUnaligned(as: Kernels.Vector.self), p.loadUnaligned(fromByteOffset: 64, as: Kernels.Vector.self))
    }
    @inline(__always) static func scalar(_ row: UnsafeRawPointer, _ j: Int) -> Float {
        row.loadUnaligned(fromByteOffset: 4 * j, as: Float.self)
    }
}

/// BF16: the top 16 bits of a Float, so widening is a shift (even columns) or a mask (odd).
enum BF16Weights: WeightFormat {
    static var chunkBytes: Int { 64 }
    @inline(__always) static func pair(_ p: UnsafeRawPointer) -> (Kernels.Vector, Kernels.Vector) {
        let words = p.loadUnaligned(as: SIMD16<UInt32>.self)
        return (unsafeBitCast(words &<< 16, to: Kernels.Vector.self), unsafeBitCast(words & 0xFFFF_0000, to: Kernels.Vector.self))
    }
    @inline(__always) static func scalar(_ row: UnsafeRawPointer, _ j: Int) -> Float {
        Float(bitPattern: UInt32(row.loadUnaligned(fromByteOffset: 2 * j, as: UInt16.self)) << 16)
    }
}

/// IEEE half: sign, 5-bit exponent (bias 15), 10-bit mantissa.
enum F16Weights: WeightFormat {
    static var chunkBytes: Int { 64 }
    @inline(__always) static func pair(_ p: UnsafeRawPointer) -> (Kernels.Vector, Kernels.Vector) {
        let words = p.loadUnaligned(as: SIMD16<UInt32>.self)
        return (widen(words & 0xFFFF), widen(words &>> 16))
    }
    /// Halves in the low 16 bits of each lane to Floats: exponent and mantissa shifted into a
    /// Float's fields, then ×2¹¹² to move the bias from 15 to 127 (subnormal halves land on
    /// subnormal Floats and scale exactly); an all-ones exponent (∞, NaN) becomes 255.
    @inline(__always) static func widen(_ halves: SIMD16<UInt32>) -> Kernels.Vector {
        let magnitude = (halves & 0x7FFF) &<< 13
        var value = unsafeBitCast(magnitude, to: Kernels.Vector.self) * Kernels.Vector(repeating: 0x1p112)
        value.replace(with: unsafeBitCast(magnitude | 0x7F80_0000, to: Kernels.Vector.self), where: (halves & 0x7C00) .== 0x7C00)
        let sign = (halves & 0x8000) &<< 16
        return unsafeBitCast(unsafeBitCast(value, to: SIMD16<UInt32>.self) | sign, to: Kernels.Vector.self)
    }
    @inline(__always) static func scalar(_ row: UnsafeRawPointer, _ j: Int) -> Float {
        Float(Float16(bitPattern: row.loadUnaligned(fromByteOffset: 2 * j, as: UInt16.self)))
    }
}
