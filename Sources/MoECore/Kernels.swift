import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The numeric kernels everything else is built from. Matrix products run on a register-tiled
/// SIMD16 micro-kernel (6 rows x 16 columns: on AVX2 that is 12 ymm accumulators, the classic
/// shape; with AVX-512, 6 rows x 32 columns in 12 zmm); row operations are SIMD over the row.
/// All matrices are row-major.
public enum Kernels {
    public typealias Vector = SIMD16<Float>
    static let width = 16

    @inline(__always) static func load(_ p: UnsafePointer<Float>) -> Vector {
        UnsafeRawPointer(p).loadUnaligned(as: Vector.self)
    }
    @inline(__always) static func store(_ v: Vector, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vector.self)
    }

    /// Room for `count` floats starting on a cache line (64 bytes), for the packed copies the
    /// kernels read a vector at a time; freed with `deallocate()`. malloc's 16-byte boundary
    /// makes every 64-byte vector load straddle two lines: the GRU router's 64 × 128 projector
    /// took 143 ns a row that way, 91 ns aligned (`FourPanelRows`, weights in cache).
    static func allocateLineAligned(_ count: Int) -> UnsafeMutablePointer<Float> {
        UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * MemoryLayout<Float>.stride, alignment: 64)
            .bindMemory(to: Float.self, capacity: max(1, count))
    }

    // MARK: Matrix products

    /// Cores to use: `MOESCOPE_THREADS`, else every core the process may run on. Training
    /// runs its two batch shards side by side (1.5–1.9× on this 2-core machine); a long prompt's
    /// large products (the LM head over hundreds of tokens) split too, while decoding a token of
    /// moescope's own small model never reaches that size and stays on one core. A Hugging Face
    /// model's decoding splits the rows of every layer's weights (`multiply`). Results are the
    /// same for any value.
    public static let threads: Int = {
        max(
            1,
            ProcessInfo.processInfo.environment["MOESCOPE_THREADS"].flatMap(Int.init)
                ?? ProcessInfo.processInfo.activeProcessorCount)
    }()

    /// A matrix in memory as the products read it: element (i, j) sits at
    /// `base[i·rowStride + j·columnStride]`. A row-major matrix has column stride 1; its
    /// transpose is the same memory with the strides swapped, so products of transposes need
    /// no transposed copies (`Aᵀ` of a sub-block with leading dimension `ld`: `.init(a, ld).transposed`).
    /// Unchecked-Sendable: it is a read-only view, shared by the threads of one product only
    /// while its caller keeps the memory alive.
    public struct Operand: @unchecked Sendable {
        public var base: UnsafePointer<Float>
        public var rowStride: Int
        public var columnStride: Int

        /// A row-major matrix whose rows are `leadingDimension` floats apart.
        public init(_ base: UnsafePointer<Float>, leadingDimension: Int) {
            self.init(base: base, rowStride: leadingDimension, columnStride: 1)
        }
        init(base: UnsafePointer<Float>, rowStride: Int, columnStride: Int) {
            (self.base, self.rowStride, self.columnStride) = (base, rowStride, columnStride)
        }
        public var transposed: Operand { Operand(base: base, rowStride: columnStride, columnStride: rowStride) }
        @inline(__always) func offset(row: Int, column: Int) -> Operand {
            Operand(base: base + row * rowStride + column * columnStride, rowStride: rowStride, columnStride: columnStride)
        }
    }

    /// C[m×n] = A[m×k] · B[k×n]  (or `+=` when `accumulate`), all row-major and contiguous.
    public static func matmul(
        _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>,
        m: Int, k: Int, n: Int, accumulate: Bool = false, threads available: Int = threads
    ) {
        gemm(
            m: m, n: n, k: k, Operand(a, leadingDimension: k), Operand(b, leadingDimension: n), c, ldc: n,
            accumulate: accumulate, threads: available)
    }

    /// C[m×n] (+)= A · B for any strided A [m×k] and B [k×n]; C row-major with leading
    /// dimension `ldc`. Products of at least ~4 M multiply-adds split over `threads` cores,
    /// along whichever of m and n is larger. Every entry of C is one FMA chain over p = 0..<k
    /// in order, whatever the blocking, packing or split, so results do not depend on the
    /// thread count (a test holds them bit-identical).
    public static func gemm(
        m: Int, n: Int, k: Int, _ a: Operand, _ b: Operand, _ c: UnsafeMutablePointer<Float>, ldc: Int,
        accumulate: Bool = false, threads available: Int = threads
    ) {
        gemm(m: m, n: n, k: k, a, b, c, ldc: ldc, accumulate: accumulate, threads: available, prepacked: nil)
    }

    /// `gemm` with B already packed (`PackedB`: a weight's `PackedPanels`), read by the whole
    /// product or by each share of its rows.
    ///
    /// Whether a product of this shape reads `prepacked` is `readsPrepacked(m:n:k:threads:)`.
    static func gemm(
        m: Int, n: Int, k: Int, _ a: Operand, _ b: Operand, _ c: UnsafeMutablePointer<Float>, ldc: Int,
        accumulate: Bool = false, threads available: Int, prepacked: PackedB?
    ) {
        guard m > 0, n > 0 else { return }
        guard k > 0 else {
            if !accumulate { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
            return
        }
        // A handful of rows (decoding one token) cannot repay packing B: read it in place.
        if m < microRows, b.columnStride == 1 || (b.rowStride == 1 && a.columnStride == 1) {
            return fewRows(m: m, n: n, k: k, a, b, c, ldc: ldc, accumulate: accumulate)
        }
        let parts = threadsUsed(m: m, k: k, n: n, threads: available)
        guard parts > 1 else { return packedProduct(m: m, n: n, k: k, a, b, c, ldc: ldc, accumulate: accumulate, prepacked: prepacked) }
        let cBits = UInt(bitPattern: c)
        if m >= n {
            let share = ((m + parts - 1) / parts + microRows - 1) / microRows * microRows
            DispatchQueue.concurrentPerform(iterations: parts) { part in
                let first = part * share
                let rows = min(share, m - first)
                guard rows > 0 else { return }
                packedProduct(
                    m: rows, n: n, k: k, a.offset(row: first, column: 0), b,
                    UnsafeMutablePointer(bitPattern: cBits)! + first * ldc, ldc: ldc, accumulate: accumulate, prepacked: prepacked)
            }
        } else {
            let share = ((n + parts - 1) / parts + width - 1) / width * width
            DispatchQueue.concurrentPerform(iterations: parts) { part in
                let first = part * share
                let columns = min(share, n - first)
                guard columns > 0 else { return }
                packedProduct(
                    m: m, n: columns, k: k, a, b.offset(row: 0, column: first),
                    UnsafeMutablePointer(bitPattern: cBits)! + first, ldc: ldc, accumulate: accumulate)
            }
        }
    }

    /// Whether `gemm` reads a `prepacked` B at this shape: not for a handful of rows (B read in
    /// place) nor when it splits the columns between threads (each share packs its own).
    static func readsPrepacked(m: Int, n: Int, k: Int, threads: Int) -> Bool {
        m >= microRows && (threadsUsed(m: m, k: k, n: n, threads: threads) <= 1 || m >= n)
    }

    /// Runs `body(i)` for every i in 0..<count, spread over `threads` cores (in the calling
    /// thread alone when that is one). Callers give each i its own output, so the result does
    /// not depend on the thread count.
    public static func parallelFor(_ count: Int, threads available: Int = threads, _ body: (Int) -> Void) {
        let parts = min(available, count)
        guard parts > 1 else {
            for i in 0..<count { body(i) }
            return
        }
        withoutActuallyEscaping(body) { body in
            let shared = UncheckedSendable(value: body)
            DispatchQueue.concurrentPerform(iterations: parts) { part in
                for i in stride(from: part, to: count, by: parts) { shared.value(i) }
            }
        }
    }

    /// A value handed to worker threads whose safety the caller guarantees (disjoint writes).
    struct UncheckedSendable<Value>: @unchecked Sendable { let value: Value }

    /// How many threads `gemm` uses for an m×k · k×n product.
    public static func threadsUsed(m: Int, k: Int, n: Int, threads available: Int = threads) -> Int {
        m * k * n >= 1 << 22 ? max(1, min(available, max(m / blockRows, n / (4 * width)))) : 1
    }

    /// Micro-tile: 6 rows × 16 columns of C in 12 ymm accumulators (AVX2's classic shape), or
    /// with 512-bit vectors 6 rows × 32 columns in 12 zmm: one vector per row left the FMA
    /// units waiting on their own latency (6 chains for 2 units × 4 cycles); two per row run
    /// the same loop at 1.3–1.6× (measured at 252 × 128 · 128 × 256 on this machine).
    static let microRows = 6
    #if MOESCOPE_WIDE_VECTORS
        static let panelWidth = 2 * width
    #else
        static let panelWidth = width
    #endif
    /// Rows of A per block (96 × 256 floats = 96 KB, stays in L2 while B's panels stream past).
    static let blockRows = 96
    /// Depth of one block: a packed 16 (or 32) × 256 panel of B (16 or 32 KB) stays in L1 across A's rows.
    static let blockDepth = 256

    /// The GotoBLAS loop nest: for each depth block, B is copied into 16-column panels, each
    /// contiguous in the order the micro-kernel reads it. Packing B costs O(k·n) and removes
    /// the strided reads that made a wide B (the LM head: 4 KB rows that all fall in one L1 set)
    /// and a transposed B slow. A is read in place (six scalars per step, row-major or
    /// transposed alike): packing it cost more than it saved at these sizes, where B has few
    /// columns. Ragged edges go through a zero-padded tile, so one micro-kernel serves every shape.
    /// `prepacked`: B already packed (`PackedB`, at least k × n of it), for a B that several
    /// products read; nil packs `b` here, a depth block at a time.
    static func packedProduct(
        m: Int, n: Int, k: Int, _ a: Operand, _ b: Operand, _ c: UnsafeMutablePointer<Float>, ldc: Int,
        accumulate: Bool, prepacked: PackedB? = nil
    ) {
        let panels = (n + panelWidth - 1) / panelWidth
        let depth = min(k, blockDepth)
        let packedB = prepacked == nil ? allocateLineAligned(panels * panelWidth * depth) : nil
        let edgeRows = allocateLineAligned(microRows * depth)
        let tile = allocateLineAligned(microRows * panelWidth)
        defer {
            packedB?.deallocate()
            edgeRows.deallocate()
            tile.deallocate()
        }
        let fullRows = m / microRows * microRows
        var p0 = 0
        while p0 < k {
            let kb = min(blockDepth, k - p0)
            let load = accumulate || p0 > 0
            // Where this depth block's panels start, and how far apart they are.
            let blockB: UnsafePointer<Float>
            let panelStride: Int
            if let prepacked {
                (blockB, panelStride) = prepacked.block(at: p0)
            } else {
                pack(b.offset(row: p0, column: 0).transposed, rows: n, depth: kb, group: panelWidth, into: packedB!)
                (blockB, panelStride) = (UnsafePointer(packedB!), panelWidth * kb)
            }
            if fullRows < m {
                pack(a.offset(row: fullRows, column: p0), rows: m - fullRows, depth: kb, group: microRows, into: edgeRows)
            }
            var i0 = 0
            while i0 < m {
                let mb = min(blockRows, m - i0)
                for jp in 0..<panels {
                    let j = jp * panelWidth
                    let columns = min(panelWidth, n - j)
                    let bPanel = blockB + jp * panelStride
                    var i = i0
                    while i < i0 + mb {
                        let rows = min(microRows, m - i)
                        // Six rows of A in place, or the zero-padded copy of the last few.
                        let aPanel =
                            rows == microRows
                            ? a.offset(row: i, column: p0)
                            : Operand(base: edgeRows, rowStride: 1, columnStride: microRows)
                        let cTile = c + i * ldc + j
                        if rows == microRows && columns == panelWidth {
                            microKernel(aPanel, bPanel, depth: kb, cTile, ldc: ldc, load: load)
                        } else {
                            if load { for r in 0..<rows { for q in 0..<columns { tile[r * panelWidth + q] = cTile[r * ldc + q] } } }
                            microKernel(aPanel, bPanel, depth: kb, tile, ldc: panelWidth, load: load)
                            for r in 0..<rows { for q in 0..<columns { cTile[r * ldc + q] = tile[r * panelWidth + q] } }
                        }
                        i += microRows
                    }
                }
                i0 += mb
            }
            p0 += kb
        }
    }

    /// B [k × n] packed once, in `packedProduct`'s layout (each depth block's 16- or 32-column
    /// panels, depth-major), for a B that several products read: attention's keys and values,
    /// read by every block of query rows. A product may use the first k' ≤ k rows and the first
    /// n' ≤ n columns of it: a panel's columns past n' are computed into the edge tile and
    /// dropped, and each entry is the same FMA chain as from B packed for that product alone.
    /// The caller deallocates it. Read-only once packed, so the threads of one product share it.
    struct PackedB: @unchecked Sendable {
        let storage: UnsafeMutablePointer<Float>
        let depth: Int
        let panels: Int

        init(_ b: Operand, k: Int, n: Int) {
            depth = k
            panels = (n + panelWidth - 1) / panelWidth
            storage = allocateLineAligned(panels * panelWidth * k)
            var p0 = 0
            while p0 < k {
                let kb = min(blockDepth, k - p0)
                pack(
                    b.offset(row: p0, column: 0).transposed, rows: n, depth: kb, group: panelWidth, into: storage + p0 * panels * panelWidth
                )
                p0 += kb
            }
        }

        /// The panels of the depth block starting at row `p0` (a multiple of `blockDepth`) and
        /// the distance between them.
        func block(at p0: Int) -> (UnsafePointer<Float>, Int) {
            (UnsafePointer(storage + p0 * panels * panelWidth), panelWidth * min(blockDepth, depth - p0))
        }

        func deallocate() { storage.deallocate() }
    }

    /// Copies `rows` rows × `depth` columns of `source` into groups of `group` rows, each
    /// stored depth-major (`group` consecutive floats per depth step), zero-padding the last.
    static func pack(_ source: Operand, rows: Int, depth: Int, group: Int, into destination: UnsafeMutablePointer<Float>) {
        var r0 = 0
        while r0 < rows {
            let valid = min(group, rows - r0)
            let out = destination + r0 * depth
            if valid < group { out.update(repeating: 0, count: group * depth) }
            // Pointer steps rather than indices: index arithmetic is overflow-checked, which made
            // this copy a quarter of a product's time at the model's shapes (k = 128, m ≈ 256).
            let rowStride = source.rowStride
            let columnStride = source.columnStride
            if columnStride == 1 {
                // Four rows at a time, so each depth step writes four neighbouring floats.
                var r = 0
                while r + 4 <= valid {
                    let a = source.base + (r0 + r) * rowStride
                    let b = a + rowStride
                    let c = b + rowStride
                    let d = c + rowStride
                    var to = out + r
                    for p in 0..<depth {
                        to[0] = a[p]
                        to[1] = b[p]
                        to[2] = c[p]
                        to[3] = d[p]
                        to += group
                    }
                    r += 4
                }
                while r < valid {
                    var from = source.base + (r0 + r) * rowStride
                    var to = out + r
                    for _ in 0..<depth {
                        to.pointee = from.pointee
                        from += 1
                        to += group
                    }
                    r += 1
                }
            } else {
                var column = source.base + r0 * rowStride
                var to = out
                for _ in 0..<depth {
                    var from = column
                    for r in 0..<valid {
                        to[r] = from.pointee
                        from += rowStride
                    }
                    column += columnStride
                    to += group
                }
            }
            r0 += group
        }
    }

    /// C[6 × panelWidth] (+)= A[6×depth] · B-panel over `depth` steps; A strided, B packed.
    /// Each entry is one FMA chain over the depth in order, whichever tile width runs.
    @inline(__always)
    static func microKernel(
        _ a: Operand, _ b: UnsafePointer<Float>, depth: Int,
        _ c: UnsafeMutablePointer<Float>, ldc: Int, load: Bool
    ) {
        #if MOESCOPE_WIDE_VECTORS
            wideMicroKernel(a, b, depth: depth, c, ldc: ldc, load: load)
        #else
            var c0 = Vector()
            var c1 = Vector()
            var c2 = Vector()
            var c3 = Vector()
            var c4 = Vector()
            var c5 = Vector()
            if load {
                c0 = Kernels.load(c)
                c1 = Kernels.load(c + ldc)
                c2 = Kernels.load(c + 2 * ldc)
                c3 = Kernels.load(c + 3 * ldc)
                c4 = Kernels.load(c + 4 * ldc)
                c5 = Kernels.load(c + 5 * ldc)
            }
            let rs = a.rowStride
            let step = a.columnStride
            var ap = a.base
            var bp = b
            for _ in 0..<depth {
                let bv = Kernels.load(bp)
                c0.addProduct(Vector(repeating: ap[0]), bv)
                c1.addProduct(Vector(repeating: ap[rs]), bv)
                c2.addProduct(Vector(repeating: ap[2 * rs]), bv)
                c3.addProduct(Vector(repeating: ap[3 * rs]), bv)
                c4.addProduct(Vector(repeating: ap[4 * rs]), bv)
                c5.addProduct(Vector(repeating: ap[5 * rs]), bv)
                ap += step
                bp += width
            }
            store(c0, c)
            store(c1, c + ldc)
            store(c2, c + 2 * ldc)
            store(c3, c + 3 * ldc)
            store(c4, c + 4 * ldc)
            store(c5, c + 5 * ldc)
        #endif
    }

    /// The 6 × 32 tile: two vectors per row of C, one broadcast of A feeding both.
    @inline(__always)
    static func wideMicroKernel(
        _ a: Operand, _ b: UnsafePointer<Float>, depth: Int,
        _ c: UnsafeMutablePointer<Float>, ldc: Int, load: Bool
    ) {
        var c0 = Vector()
        var c1 = Vector()
        var c2 = Vector()
        var c3 = Vector()
        var c4 = Vector()
        var c5 = Vector()
        var d0 = Vector()
        var d1 = Vector()
        var d2 = Vector()
        var d3 = Vector()
        var d4 = Vector()
        var d5 = Vector()
        if load {
            c0 = Kernels.load(c)
            c1 = Kernels.load(c + ldc)
            c2 = Kernels.load(c + 2 * ldc)
            c3 = Kernels.load(c + 3 * ldc)
            c4 = Kernels.load(c + 4 * ldc)
            c5 = Kernels.load(c + 5 * ldc)
            d0 = Kernels.load(c + width)
            d1 = Kernels.load(c + ldc + width)
            d2 = Kernels.load(c + 2 * ldc + width)
            d3 = Kernels.load(c + 3 * ldc + width)
            d4 = Kernels.load(c + 4 * ldc + width)
            d5 = Kernels.load(c + 5 * ldc + width)
        }
        let rs = a.rowStride
        let step = a.columnStride
        var ap = a.base
        var bp = b
        for _ in 0..<depth {
            let bv = Kernels.load(bp)
            let bw = Kernels.load(bp + width)
            var x = Vector(repeating: ap[0])
            c0.addProduct(x, bv)
            d0.addProduct(x, bw)
            x = Vector(repeating: ap[rs])
            c1.addProduct(x, bv)
            d1.addProduct(x, bw)
            x = Vector(repeating: ap[2 * rs])
            c2.addProduct(x, bv)
            d2.addProduct(x, bw)
            x = Vector(repeating: ap[3 * rs])
            c3.addProduct(x, bv)
            d3.addProduct(x, bw)
            x = Vector(repeating: ap[4 * rs])
            c4.addProduct(x, bv)
            d4.addProduct(x, bw)
            x = Vector(repeating: ap[5 * rs])
            c5.addProduct(x, bv)
            d5.addProduct(x, bw)
            ap += step
            bp += 2 * width
        }
        store(c0, c)
        store(c1, c + ldc)
        store(c2, c + 2 * ldc)
        store(c3, c + 3 * ldc)
        store(c4, c + 4 * ldc)
        store(c5, c + 5 * ldc)
        store(d0, c + width)
        store(d1, c + ldc + width)
        store(d2, c + 2 * ldc + width)
        store(d3, c + 3 * ldc + width)
        store(d4, c + 4 * ldc + width)
        store(d5, c + 5 * ldc + width)
    }

    /// Fewer than six rows, B read in place: with B row-major each row of C is a sum of B's
    /// rows; with B the transpose of a row-major W (y = x Wᵀ, a router at decode) each entry
    /// is a dot product of two contiguous rows.
    static func fewRows(
        m: Int, n: Int, k: Int, _ a: Operand, _ b: Operand, _ c: UnsafeMutablePointer<Float>, ldc: Int,
        accumulate: Bool
    ) {
        if b.columnStride != 1, a.columnStride == 1 {
            for i in 0..<m {
                for j in 0..<n {
                    let d = dot(a.base + i * a.rowStride, b.base + j * b.columnStride, count: k)
                    c[i * ldc + j] = accumulate ? c[i * ldc + j] + d : d
                }
            }
            return
        }
        let fullColumns = n / width * width
        for i in 0..<m {
            let aRow = a.offset(row: i, column: 0)
            let cRow = c + i * ldc
            var j = 0
            while j < fullColumns {
                // Two accumulators hide FMA latency.
                var even = accumulate ? load(cRow + j) : Vector()
                var odd = Vector()
                var p = 0
                var bp = b.base + j
                while p + 2 <= k {
                    even.addProduct(Vector(repeating: aRow.base[p * aRow.columnStride]), load(bp))
                    odd.addProduct(Vector(repeating: aRow.base[(p + 1) * aRow.columnStride]), load(bp + b.rowStride))
                    bp += 2 * b.rowStride
                    p += 2
                }
                if p < k { even.addProduct(Vector(repeating: aRow.base[p * aRow.columnStride]), load(bp)) }
                store(even + odd, cRow + j)
                j += width
            }
            for q in fullColumns..<n {
                var s: Float = accumulate ? cRow[q] : 0
                for p in 0..<k { s += aRow.base[p * aRow.columnStride] * b.base[p * b.rowStride + q] }
                cRow[q] = s
            }
        }
    }

    // MARK: Attention

    /// One head of causal attention, softmax(Q Kᵀ · scale + mask) V, for `count` query rows at
    /// positions `offset ..< offset + count` against the `offset + count` key and value rows
    /// (a KV cache's, or the same sequence's). `scores` (count × (offset + count)) is left
    /// holding the probabilities, zero where masked, for a backward pass. Every attention in
    /// moescope — training, its own models, Hugging Face models — runs on this, or, for a
    /// decoded token's few rows, on `fewRowAttention` (the same softmax, scores summed pairwise).
    public static func causalAttention(
        count: Int, offset: Int, queries: Operand, keys: Operand, values: Operand,
        dims: Int, valueDims: Int, scale: Float, scores: UnsafeMutablePointer<Float>,
        into out: UnsafeMutablePointer<Float>, ldo: Int
    ) {
        let length = offset + count
        // Keys and values packed once for all the query blocks (each block packing its own copy
        // was most of these products' time); a decoded token's few rows read them in place.
        let packedKeys = count < microRows ? nil : PackedB(keys.transposed, k: dims, n: length)
        let packedValues = count < microRows ? nil : PackedB(values, k: length, n: valueDims)
        defer {
            packedKeys?.deallocate()
            packedValues?.deallocate()
        }
        // Queries a block of rows at a time, each against the keys up to its last row only:
        // the masked upper triangle is never computed. Every score is the same dot product,
        // and the masked probabilities are exact zeros, so the result equals the full product's.
        var i0 = 0
        while i0 < count {
            let rows = attentionBlock(count - i0)
            let visible = offset + i0 + rows
            if let packedKeys {
                packedProduct(
                    m: rows, n: visible, k: dims, queries.offset(row: i0, column: 0), keys.transposed, scores + i0 * length,
                    ldc: length, accumulate: false, prepacked: packedKeys)
            } else {
                gemm(
                    m: rows, n: visible, k: dims, queries.offset(row: i0, column: 0), keys.transposed, scores + i0 * length,
                    ldc: length, threads: 1)
            }
            i0 += rows
        }
        for i in 0..<count { causalSoftmax(scores + i * length, count: offset + i + 1, length: length, scale: scale) }
        i0 = 0
        while i0 < count {
            let rows = attentionBlock(count - i0)
            let visible = offset + i0 + rows
            let probabilities = Operand(UnsafePointer(scores + i0 * length), leadingDimension: length)
            if let packedValues {
                packedProduct(
                    m: rows, n: valueDims, k: visible, probabilities, values, out + i0 * ldo, ldc: ldo, accumulate: false,
                    prepacked: packedValues)
            } else {
                gemm(m: rows, n: valueDims, k: visible, probabilities, values, out + i0 * ldo, ldc: ldo, threads: 1)
            }
            i0 += rows
        }
    }

    /// One row of causal attention's scores: `softmax(x, count: n, scale: scale)` with
    /// `fusedExp` (a third faster than `exp` here), then the masked entries n..<length set to 0;
    /// rows under 16 entries (a window's first 15) run `softmax` itself. A longer row reads its
    /// last n mod 16 entries as the vector ending at entry n (overlapping the previous one)
    /// rather than as a partial vector padded with −∞: the partial loads and stores went through
    /// memory a lane at a time (three store-forwarding stalls a row), and e^−∞ on the padding
    /// lanes took `exp`'s subnormal path; together a quarter of a long text's softmax time. The
    /// maximum is taken on the unscaled scores, max(x)·s being max(x·s) for s > 0, so the first
    /// pass writes nothing. The sums add the same lanes in the same order as `softmax`.
    static func causalSoftmax(_ x: UnsafeMutablePointer<Float>, count n: Int, length: Int, scale: Float) {
        guard n >= width, scale > 0 else {
            softmax(x, count: n, scale: scale)
            (x + n).update(repeating: 0, count: length - n)
            return
        }
        let full = n - n % width
        let rest = n - full
        let last = x + n - width  // the last 16 entries; its top `rest` lanes are past `full`
        var lanes = Vector(repeating: -.infinity)
        var i = 0
        while i < full {
            let v = load(x + i)
            lanes = select(signMask(v - lanes), lanes, v)
            i += width
        }
        if rest > 0 {
            let v = load(last)
            lanes = select(signMask(v - lanes), lanes, v)
        }
        let scales = Vector(repeating: scale)
        let shift = Vector(repeating: laneMax(lanes) * scale)
        // The last vector's exponentials from the scores, before the loop overwrites the lanes
        // it shares with the last full vector (which compute the same values).
        let lastExp = rest > 0 ? fusedExp(load(last) * scales - shift) : Vector()
        var sums = Vector()
        i = 0
        while i < full {
            let e = fusedExp(load(x + i) * scales - shift)
            store(e, x + i)
            sums += e
            i += width
        }
        if rest > 0 {
            store(lastExp, last)
            sums += lanesShiftedDown(lastExp, by: width - rest)  // entry full + j in lane j, as `softmax` adds it
        }
        let inverse = Vector(repeating: 1 / laneSum(sums))
        let lastScaled = load(last) * inverse
        i = 0
        while i < full {
            store(load(x + i) * inverse, x + i)
            i += width
        }
        if rest > 0 { store(lastScaled, last) }
        (x + n).update(repeating: 0, count: length - n)
    }

    /// Lanes `s`…15 of v moved to lanes 0…15−s, zeros above (one unaligned load from a
    /// 32-float copy: a single stall a row where the partial loads stalled per lane).
    @inline(__always) static func lanesShiftedDown(_ v: Vector, by s: Int) -> Vector {
        var pair = (v, Vector())
        return withUnsafeMutableBytes(of: &pair) { load($0.baseAddress!.assumingMemoryBound(to: Float.self) + s) }
    }

    /// Query rows in the next block of causal attention when `remaining` are left: 48, or all
    /// of them where a block would leave fewer than 6 — fewer rows than the micro-tile take
    /// the unpacked path, whose sums run in another order, and the blocking must not change
    /// any result.
    static func attentionBlock(_ remaining: Int) -> Int { remaining < 48 + microRows ? remaining : 48 }

    // MARK: Vector operations

    public static func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, count n: Int) -> Float {
        var s0 = Vector()
        var s1 = Vector()
        var i = 0
        while i + 2 * width <= n {
            s0.addProduct(load(x + i), load(y + i))
            s1.addProduct(load(x + i + width), load(y + i + width))
            i += 2 * width
        }
        if i + width <= n {
            s0.addProduct(load(x + i), load(y + i))
            i += width
        }
        var total = laneSum(s0 + s1)
        while i < n {
            total += x[i] * y[i]
            i += 1
        }
        return total
    }

    /// The lanes of `v` added in order 0…15: bit for bit `SIMD.sum()` (whose −0 start adds
    /// nothing), but inlined. The standard library's generic `sum()` stayed an out-of-line call
    /// taking the vector in four registers, a third of a decoded token's time (perf), paid once
    /// per dot product: every output of a one-token product x Wᵀ.
    @inline(__always) static func laneSum(_ v: Vector) -> Float {
        var total = v[0]
        for lane in 1..<width { total += v[lane] }
        return total
    }

    /// y += alpha · x
    public static func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count n: Int) {
        let va = Vector(repeating: alpha)
        var i = 0
        while i + width <= n {
            var v = load(y + i)
            v.addProduct(va, load(x + i))
            store(v, y + i)
            i += width
        }
        while i < n {
            y[i] += alpha * x[i]
            i += 1
        }
    }

    public static func sumOfSquares(_ x: UnsafePointer<Float>, count n: Int) -> Float { dot(x, x, count: n) }

    /// eˣ on 16 lanes (Cephes' expf scheme): x = n·ln2 + r with |r| ≤ ln2/2, a degree-6
    /// polynomial for eʳ, and 2ⁿ put straight into the exponent bits. Within 2 ulp of `expf`
    /// over the float range (a test checks it); −∞ gives exactly 0, large x gives +∞.
    @inline(__always) public static func exp(_ x: Vector) -> Vector {
        // Lanes chosen by bitwise selects on sign masks, not `clamped`/`pointwiseMin` (lane-by-
        // lane loops) nor `replace(with:where:)` (whose 16-lane masks went through 4-lane mask
        // registers, a third of a GRU cell's time): the same lanes, in plain vector logic.
        let low = Vector(repeating: -103.9)
        let high = Vector(repeating: 88.8)
        let below = signMask(x - low)  // x < low (exact: x − low is 0 only where they are equal)
        let above = signMask(high - x)  // x > high
        let clamped = select(below, low, select(above, high, x))
        // Adding 1.5·2²³ rounds to the nearest integer and leaves it in the low mantissa bits:
        // n as a float and as an integer without a (slow, lane-by-lane) conversion.
        let magic = Vector(repeating: 12_582_912)
        let shifted = clamped * Vector(repeating: 1.442_695_04) + magic
        let n = shifted - magic
        let ni = unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- unsafeBitCast(magic, to: SIMD16<Int32>.self)
        // r = x − n·ln2 in two parts, so r keeps its low bits.
        var r = clamped - n * Vector(repeating: 0.693_359_375)
        r = r - n * Vector(repeating: -2.121_944_4e-4)
        var poly = Vector(repeating: 1.987_569_1e-4)
        poly = poly * r + Vector(repeating: 1.398_199_9e-3)
        poly = poly * r + Vector(repeating: 8.333_451_9e-3)
        poly = poly * r + Vector(repeating: 4.166_579_6e-2)
        poly = poly * r + Vector(repeating: 1.666_666_5e-1)
        poly = poly * r + Vector(repeating: 5e-1)
        poly = poly * r * r + r + Vector(repeating: 1)
        // 2ⁿ in two factors, so n down to −150 (subnormal results) stays representable.
        let half = ni &>> 1
        let scaleA = unsafeBitCast((half &+ 127) &<< 23, to: Vector.self)
        let scaleB = unsafeBitCast((ni &- half &+ 127) &<< 23, to: Vector.self)
        let result = select(below, Vector(repeating: 0), select(above, Vector(repeating: .infinity), poly * scaleA * scaleB))
        return select(nanMask(x), x, result)  // NaN stays NaN
    }

    /// eˣ on 16 lanes for the element-wise passes that run one a score or hidden unit (causal
    /// attention's softmax, SwiGLU's SiLU): `exp`'s reduction and polynomial on fused
    /// multiply-adds, with one 2ⁿ factor, at about 60 % of its cost. Within 2 ulp of `expf` for
    /// −87.3 ≤ x ≤ 88.3 (a test checks it); below −87.3 it returns 0 (eˣ there is under
    /// 1.2·10⁻³⁸, where `expf` would return a subnormal), above 88.3 +∞ (`expf` is still finite
    /// up to 88.72), NaN kept. Not lane for lane `exp`: the tape's and the model's blocks both call
    /// the kernels that use it, so they still agree.
    @inline(__always) public static func fusedExp(_ x: Vector) -> Vector {
        let low = Vector(repeating: -87.3)
        let high = Vector(repeating: 88.3)
        let below = signMask(x - low)
        let above = signMask(high - x)
        let clamped = select(below, low, select(above, high, x))
        let magic = Vector(repeating: 12_582_912)  // n as in `exp`
        let shifted = clamped * Vector(repeating: 1.442_695_04) + magic
        let n = shifted - magic
        let ni = unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- unsafeBitCast(magic, to: SIMD16<Int32>.self)
        var r = clamped.addingProduct(n, Vector(repeating: -0.693_359_375))
        r = r.addingProduct(n, Vector(repeating: 2.121_944_4e-4))
        var poly = Vector(repeating: 1.398_199_9e-3).addingProduct(Vector(repeating: 1.987_569_1e-4), r)
        poly = Vector(repeating: 8.333_451_9e-3).addingProduct(poly, r)
        poly = Vector(repeating: 4.166_579_6e-2).addingProduct(poly, r)
        poly = Vector(repeating: 1.666_666_5e-1).addingProduct(poly, r)
        poly = Vector(repeating: 5e-1).addingProduct(poly, r)
        poly = (r + Vector(repeating: 1)).addingProduct(poly, r * r)
        let scaled = poly * unsafeBitCast((ni &+ 127) &<< 23, to: Vector.self)  // n in −126…127: a normal 2ⁿ
        let result = select(below, Vector(repeating: 0), select(above, Vector(repeating: .infinity), scaled))
        return select(nanMask(x), x, result)  // NaN stays NaN
    }

    /// All ones in the lanes whose sign bit is set (v < 0, −0, or a NaN with its sign bit), 0 elsewhere.
    @inline(__always) static func signMask(_ v: Vector) -> SIMD16<Int32> { unsafeBitCast(v, to: SIMD16<Int32>.self) &>> 31 }

    /// All ones in the NaN lanes of v (magnitude bits above +∞'s), 0 elsewhere.
    @inline(__always) static func nanMask(_ v: Vector) -> SIMD16<Int32> {
        (Int32(0x7F80_0000) &- (unsafeBitCast(v, to: SIMD16<Int32>.self) & 0x7FFF_FFFF)) &>> 31
    }

    /// `a` in the lanes where `mask` is all ones, `b` where it is 0, bit for bit.
    @inline(__always) static func select(_ mask: SIMD16<Int32>, _ a: Vector, _ b: Vector) -> Vector {
        let (ai, bi) = (unsafeBitCast(a, to: SIMD16<Int32>.self), unsafeBitCast(b, to: SIMD16<Int32>.self))
        return unsafeBitCast((ai & mask) | (bi & ~mask), to: Vector.self)
    }

    /// tanh on 16 lanes (Cephes' tanhf scheme): an odd polynomial for |x| < 0.625, else
    /// 1 − 2/(e^{2|x|} + 1) with the sign put back. Within a few ulp of `tanhf` (a test checks
    /// it) at a fraction of its cost; ±∞ gives ±1, NaN stays NaN.
    @inline(__always) public static func tanh(_ x: Vector) -> Vector {
        let magnitude = unsafeBitCast(unsafeBitCast(x, to: SIMD16<UInt32>.self) & 0x7FFF_FFFF, to: Vector.self)
        let s = x * x
        var poly = Vector(repeating: -5.704_988_727_45e-3)
        poly = poly * s + Vector(repeating: 2.063_908_879_54e-2)
        poly = poly * s + Vector(repeating: -5.373_971_555_31e-2)
        poly = poly * s + Vector(repeating: 1.333_144_220_36e-1)
        poly = poly * s + Vector(repeating: -3.333_328_194_22e-1)
        let small = poly * s * x + x
        let one = Vector(repeating: 1)
        let large = one - Vector(repeating: 2) / (exp(magnitude + magnitude) + one)
        let signed = unsafeBitCast(
            unsafeBitCast(large, to: SIMD16<UInt32>.self) | (unsafeBitCast(x, to: SIMD16<UInt32>.self) & 0x8000_0000), to: Vector.self)
        let result = select(signMask(magnitude - Vector(repeating: 0.625)), small, signed)
        return select(nanMask(x), x, result)  // NaN stays NaN
    }

    /// The same tanh for one value (lane for lane what the vector version gives).
    @inline(__always) public static func tanh(_ x: Float) -> Float { tanh(Vector(repeating: x))[0] }

    /// In-place softmax of one row, softmax(x · scale) (attention's scores; x · 1 is x). Entries
    /// of −∞ get probability exactly 0 (the Hash router relies on that to express a one-hot
    /// mixture as logits). Every pass runs 16 lanes at a time, the row's last n mod 16 entries
    /// as one vector padded with −∞ (exp gives the padding exactly 0), so every entry's eˣ is
    /// the vector `exp` and no row pays libm's `expf` on its tail (attention's rows are 1…256
    /// long; a router's 8).
    public static func softmax(_ x: UnsafeMutablePointer<Float>, count n: Int, scale: Float = 1) {
        let full = n - n % width
        let rest = n - full
        let scales = Vector(repeating: scale)
        if full == 0 && rest > 0 {
            // One partial vector (a router's row of 8 logits): the same lanes as the passes
            // below, kept in registers, so the row is read and written once, not three times
            // (each partial read stalls on the partial write before it).
            let inside = (laneIndices &- SIMD16<Int32>(repeating: Int32(rest))) &>> 31  // lanes 0..<rest
            let v = select(inside, loadPartial(x, count: rest, padding: -.infinity) * scales, Vector(repeating: -.infinity))
            let e = exp(v - Vector(repeating: laneMax(v)))
            let inverse = Vector(repeating: 1 / laneSum(select(inside, e, Vector())))
            storePartial(e * inverse, x, count: rest)
            return
        }
        // Scaled in place with the maximum taken on the way (v − max < 0 keeps the max; a row
        // holding NaN comes out NaN whichever lane the select keeps).
        var lanes = Vector(repeating: -.infinity)
        var i = 0
        while i < full {
            let v = load(x + i) * scales
            store(v, x + i)
            lanes = select(signMask(v - lanes), lanes, v)
            i += width
        }
        if rest > 0 {
            let v = loadPartial(x + full, count: rest, padding: -.infinity) * scales
            storePartial(v, x + full, count: rest)
            lanes = select(signMask(v - lanes), lanes, v)
        }
        let shift = Vector(repeating: laneMax(lanes))
        var sums = Vector()
        i = 0
        while i < full {
            let e = exp(load(x + i) - shift)
            store(e, x + i)
            sums += e
            i += width
        }
        if rest > 0 {
            let e = exp(loadPartial(x + full, count: rest, padding: -.infinity) - shift)
            storePartial(e, x + full, count: rest)
            sums += e.replacing(with: 0, where: laneIndices .>= SIMD16<Int32>(repeating: Int32(rest)))
        }
        let inverse = Vector(repeating: 1 / laneSum(sums))
        i = 0
        while i < full {
            store(load(x + i) * inverse, x + i)
            i += width
        }
        if rest > 0 { storePartial(loadPartial(x + full, count: rest, padding: 0) * inverse, x + full, count: rest) }
    }

    /// 0, 1, …, 15: which lanes of a partial vector hold entries.
    static let laneIndices = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)

    /// The first `count` (< 16) floats at `p` in lanes 0…count−1, `padding` in the others,
    /// without reading past p + count.
    @inline(__always) static func loadPartial(_ p: UnsafePointer<Float>, count: Int, padding: Float) -> Vector {
        var v = Vector(repeating: padding)
        withUnsafeMutableBytes(of: &v) { $0.baseAddress!.copyMemory(from: p, byteCount: count * MemoryLayout<Float>.stride) }
        return v
    }

    /// Lanes 0…count−1 of `v` to `p`, writing nothing past p + count.
    @inline(__always) static func storePartial(_ v: Vector, _ p: UnsafeMutablePointer<Float>, count: Int) {
        withUnsafeBytes(of: v) {
            UnsafeMutableRawPointer(p).copyMemory(from: $0.baseAddress!, byteCount: count * MemoryLayout<Float>.stride)
        }
    }

    /// The largest lane, by halving (the standard library's `max()` runs a lane-by-lane loop
    /// with NaN checks, a fifth of an attention row's softmax). NaN lanes are passed over as
    /// the masked replace passes them; a row holding NaN comes out NaN either way.
    @inline(__always) static func laneMax(_ v: Vector) -> Float {
        var v8 = v.lowHalf
        let high8 = v.highHalf
        v8.replace(with: high8, where: high8 .> v8)
        var v4 = v8.lowHalf
        v4.replace(with: v8.highHalf, where: v8.highHalf .> v4)
        var v2 = v4.lowHalf
        v2.replace(with: v4.highHalf, where: v4.highHalf .> v2)
        return v2[1] > v2[0] ? v2[1] : v2[0]
    }

    /// SwiGLU's gate: out = silu(gate) ⊙ up, silu(x) = x·σ(x) = x / (1 + e⁻ˣ) with `fusedExp`,
    /// elementwise over `count` (the last count mod 16 as one partial vector).
    public static func swiglu(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, count n: Int) {
        var i = 0
        let one = Vector(repeating: 1)
        while i + width <= n {
            let g = load(gate + i)
            store(g / (one + fusedExp(-g)) * load(up + i), out + i)
            i += width
        }
        if i < n {
            let g = loadPartial(gate + i, count: n - i, padding: 0)
            storePartial(g / (one + fusedExp(-g)) * loadPartial(up + i, count: n - i, padding: 0), out + i, count: n - i)
        }
    }

    /// silu(gate) ⊙ up for two tensors of the same shape (every SwiGLU layer's middle step).
    public static func swiglu(gate: Tensor, up: Tensor) -> Tensor {
        precondition(gate.shape == up.shape, "swiglu shapes \(gate.shape), \(up.shape)")
        var out = Tensor(uninitialized: gate.shape)
        gate.scalars.withUnsafeBufferPointer { gp in
            up.scalars.withUnsafeBufferPointer { up in
                out.scalars.withUnsafeMutableBufferPointer { op in
                    swiglu(gate: gp.baseAddress!, up: up.baseAddress!, op.baseAddress!, count: op.count)
                }
            }
        }
        return out
    }

    /// Gradients of `swiglu`: d gate = dy·up·σ(g)(1 + g(1 − σ(g))), d up = dy·silu(g).
    public static func swigluBackward(
        gate: UnsafePointer<Float>, up: UnsafePointer<Float>, outputGradient dy: UnsafePointer<Float>,
        gateGradient dGate: UnsafeMutablePointer<Float>, upGradient dUp: UnsafeMutablePointer<Float>, count n: Int
    ) {
        var i = 0
        let one = Vector(repeating: 1)
        while i + width <= n {
            let g = load(gate + i)
            let d = load(dy + i)
            let sigma = one / (one + fusedExp(-g))
            store(d * g * sigma, dUp + i)
            store(d * load(up + i) * sigma * (one + g * (one - sigma)), dGate + i)
            i += width
        }
        // The tail as one partial vector (padding 0), so its elements take the same lane
        // arithmetic as the full vectors and the forward's σ.
        if i < n {
            let count = n - i
            let g = loadPartial(gate + i, count: count, padding: 0)
            let d = loadPartial(dy + i, count: count, padding: 0)
            let sigma = one / (one + fusedExp(-g))
            storePartial(d * g * sigma, dUp + i, count: count)
            storePartial(d * loadPartial(up + i, count: count, padding: 0) * sigma * (one + g * (one - sigma)), dGate + i, count: count)
        }
    }

    /// y = x / sqrt(mean(x²) + eps) ⊙ gain, row by row. Returns nothing; `rstd` (one per row)
    /// is written when given, for the backward pass.
    public static func rmsNorm(
        _ x: UnsafePointer<Float>, gain: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
        rows: Int, cols: Int, eps: Float, rstd: UnsafeMutablePointer<Float>? = nil
    ) {
        for r in 0..<rows {
            let xr = x + r * cols
            let yr = y + r * cols
            let inverse = 1 / (sumOfSquares(xr, count: cols) / Float(cols) + eps).squareRoot()
            rstd?[r] = inverse
            let vs = Vector(repeating: inverse)
            var i = 0
            while i + width <= cols {
                store(load(xr + i) * vs * load(gain + i), yr + i)
                i += width
            }
            while i < cols {
                yr[i] = xr[i] * inverse * gain[i]
                i += 1
            }
        }
    }

    /// σ(x) = 1 / (1 + e⁻ˣ) on 16 lanes, with the vector `exp`.
    @inline(__always) public static func sigmoid(_ x: Vector) -> Vector {
        let one = Vector(repeating: 1)
        return one / (one + exp(-x))
    }
    /// The same σ for one value (lane for lane what the vector version gives: the GRU router's
    /// cell runs 16 lanes at a time where the tape runs value by value, and the two must agree).
    @inline(__always) public static func sigmoid(_ x: Float) -> Float { sigmoid(Vector(repeating: x))[0] }
}

extension Tensor {
    /// self += delta, element by element (a residual connection: a block's output added to the
    /// stream it read).
    public mutating func add(_ delta: Tensor) {
        precondition(delta.count == count, "add shapes \(delta.shape) into \(shape)")
        delta.scalars.withUnsafeBufferPointer { dp in
            scalars.withUnsafeMutableBufferPointer { xp in Kernels.axpy(1, dp.baseAddress!, xp.baseAddress!, count: xp.count) }
        }
    }

    /// out = op(a) · op(b) (or `+=`), op = identity or transpose of a 2-D tensor.
    public static func product(
        _ a: Tensor, transposed ta: Bool, _ b: Tensor, transposed tb: Bool,
        into out: inout Tensor, accumulate: Bool, threads: Int = Kernels.threads
    ) {
        let (m, k) = ta ? (a.cols, a.rows) : (a.rows, a.cols)
        let n = tb ? b.rows : b.cols
        precondition(
            (tb ? b.cols : b.rows) == k && out.rows == m && out.cols == n,
            "product shapes \(a.shape)\(ta ? "ᵀ" : "") · \(b.shape)\(tb ? "ᵀ" : "") into \(out.shape)")
        a.scalars.withUnsafeBufferPointer { ap in
            b.scalars.withUnsafeBufferPointer { bp in
                out.scalars.withUnsafeMutableBufferPointer { cp in
                    let lhs = Kernels.Operand(ap.baseAddress!, leadingDimension: a.cols)
                    let rhs = Kernels.Operand(bp.baseAddress!, leadingDimension: b.cols)
                    Kernels.gemm(
                        m: m, n: n, k: k, ta ? lhs.transposed : lhs, tb ? rhs.transposed : rhs,
                        cp.baseAddress!, ldc: n, accumulate: accumulate, threads: threads)
                }
            }
        }
    }

    /// Transpose of a 2-D tensor.
    public func transposed() -> Tensor {
        let r = rows
        let c = cols
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
