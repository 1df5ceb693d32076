import Foundation
import Synchronization
import Testing

@testable import MoECore

/// The stored-dtype products (`Kernels.multiply`) against a plain reference, and their thread
/// split against one thread.
@Suite struct StoredWeightTests {
    /// W [rows × columns] of normal values, stored in `dtype`, and the Floats it stores exactly.
    struct Stored {
        let bytes: UnsafeMutableRawPointer
        let exact: [Float]
        let matrix: StoredMatrix

        init(rows: Int, columns: Int, dtype: SafeTensorsDType, seed: UInt64) {
            var g = SeededGenerator(seed: seed)
            let values = (0..<(rows * columns)).map { _ in g.nextNormal() }
            let bytes = UnsafeMutableRawPointer.allocate(byteCount: max(1, values.count * dtype.byteSize), alignment: 64)
            for (i, v) in values.enumerated() {
                switch dtype {
                case .f32: bytes.storeBytes(of: v, toByteOffset: 4 * i, as: Float.self)
                case .f16: bytes.storeBytes(of: Float16(v).bitPattern, toByteOffset: 2 * i, as: UInt16.self)
                case .bf16: bytes.storeBytes(of: SafeTensorsFile.bfloat16Bits(v), toByteOffset: 2 * i, as: UInt16.self)
                case .i32, .i64: preconditionFailure("weights are floats")
                }
            }
            var exact = [Float](repeating: 0, count: values.count)
            exact.withUnsafeMutableBufferPointer { SafeTensorsFile.decode(bytes, dtype: dtype, into: $0.baseAddress!, count: values.count) }
            self.exact = exact
            self.bytes = bytes
            matrix = StoredMatrix(base: bytes, dtype: dtype, rows: rows, columns: columns)
        }

        /// The same matrix copied to `base` (which the caller owns).
        init(copying other: Stored, to base: UnsafeMutableRawPointer) {
            (bytes, exact) = (base, other.exact)
            matrix = StoredMatrix(base: base, dtype: other.matrix.dtype, rows: other.matrix.rows, columns: other.matrix.columns)
        }
    }

    func multiply(_ products: [(Stored, [Float], Int)], threads: Int, minimumBytesPerThread: Int = 524_288) -> [[Float]] {
        var outputs = products.map { [Float](repeating: .nan, count: $0.2 * $0.0.matrix.rows) }
        let inputs = products.map { p in
            let buffer = UnsafeMutablePointer<Float>.allocate(capacity: max(1, p.1.count))
            buffer.initialize(from: p.1, count: p.1.count)
            return buffer
        }
        let results = products.indices.map { i in UnsafeMutablePointer<Float>.allocate(capacity: max(1, outputs[i].count)) }
        defer {
            inputs.forEach { $0.deallocate() }
            results.forEach { $0.deallocate() }
        }
        Kernels.multiply(
            products.indices.map { i in
                WeightProduct(weight: products[i].0.matrix, input: inputs[i], output: results[i], count: products[i].2)
            }, threads: threads, unitBytes: minimumBytesPerThread == 0 ? 512 : 131_072, minimumBytesPerThread: minimumBytesPerThread)
        for i in outputs.indices { for j in outputs[i].indices { outputs[i][j] = results[i][j] } }
        return outputs
    }

    /// Rows and columns that exercise full 32-column chunks, a ragged tail, fewer than four
    /// rows, a ragged row group, one and two inputs at a time, and both the dot path (up to
    /// `Kernels.fewInputRows` inputs) and the GEMM path.
    @Test(arguments: [SafeTensorsDType.f32, .f16, .bf16])
    func productsMatchThePlainReference(dtype: SafeTensorsDType) {
        for (rows, columns, n) in [
            (1, 1, 1), (3, 31, 1), (7, 32, 2), (13, 100, 4), (9, 96, 5), (70, 257, 9), (66, 2048, 1), (5, 64, 17),
            (11, 70, Kernels.fewInputRows), (13, 100, Kernels.fewInputRows + 3),
        ] {
            let w = Stored(rows: rows, columns: columns, dtype: dtype, seed: UInt64(rows * 7 + columns))
            defer { w.bytes.deallocate() }
            var g = SeededGenerator(seed: 99)
            let x = (0..<(n * columns)).map { _ in g.nextNormal() }
            let y = multiply([(w, x, n)], threads: 1)[0]
            for t in 0..<n {
                for r in 0..<rows {
                    var s = 0.0
                    for j in 0..<columns { s += Double(x[t * columns + j]) * Double(w.exact[r * columns + j]) }
                    #expect(
                        abs(Double(y[t * rows + r]) - s) <= 1e-4 * Double(columns).squareRoot(),
                        "\(dtype) \(rows)×\(columns), n \(n): y[\(t), \(r)] = \(y[t * rows + r]), expected \(s)")
                }
            }
        }
    }

    /// A matrix whose last byte ends a mapping, followed by an unreadable page: the kernel's
    /// look-ahead (hints for the next row groups) reads nothing past the matrix, on every row
    /// count around the group size and for every dtype.
    @Test(arguments: [SafeTensorsDType.f32, .f16, .bf16])
    func matrixEndingAtAGuardPage(dtype: SafeTensorsDType) throws {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let columns = 64
        for rows in [1, 4, 7, 8, 12, 13, 16, 64] {
            let w = Stored(rows: rows, columns: columns, dtype: dtype, seed: UInt64(rows))
            defer { w.bytes.deallocate() }
            let bytes = w.matrix.byteCount
            let mappedBytes = (bytes + page - 1) / page * page
            let region = try #require(mmap(nil, mappedBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
            #expect(region != MAP_FAILED)
            defer { munmap(region, mappedBytes + page) }
            #expect(mprotect(region + mappedBytes, page, PROT_NONE) == 0)
            let base = region + (mappedBytes - bytes)
            base.copyMemory(from: w.bytes, byteCount: bytes)
            let atEnd = Stored(copying: w, to: base)
            var g = SeededGenerator(seed: 3)
            let x = (0..<columns).map { _ in g.nextNormal() }
            let expected = multiply([(w, x, 1)], threads: 1)[0]
            let y = multiply([(atEnd, x, 1)], threads: 1, minimumBytesPerThread: 0)[0]
            #expect(zip(y, expected).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(dtype) \(rows) rows")
        }
    }

    /// The in-register widening equals the scalar conversion for every 16-bit pattern
    /// (subnormals, ±0, ±∞ and NaNs included).
    @Test func everyHalfAndBFloat16PatternWidensExactly() {
        let words = UnsafeMutablePointer<UInt16>.allocate(capacity: 65_536)
        defer { words.deallocate() }
        for i in 0..<65_536 { words[i] = UInt16(i) }
        for c in 0..<(65_536 / 32) {
            let p = UnsafeRawPointer(words + 32 * c)
            let (he, ho) = F16Weights.pair(p)
            let (be, bo) = BF16Weights.pair(p)
            for lane in 0..<16 {
                for (value, index) in [(he[lane], 2 * lane), (ho[lane], 2 * lane + 1)] {
                    let expected = Float(Float16(bitPattern: words[32 * c + index]))
                    #expect(value.bitPattern == expected.bitPattern || (value.isNaN && expected.isNaN), "f16 \(32 * c + index)")
                }
                for (value, index) in [(be[lane], 2 * lane), (bo[lane], 2 * lane + 1)] {
                    #expect(value.bitPattern == UInt32(words[32 * c + index]) << 16, "bf16 \(32 * c + index)")
                }
            }
        }
    }

    /// Several products split over 1, 2 and 3 threads give bit-identical outputs, on both paths.
    @Test(arguments: [SafeTensorsDType.f32, .f16, .bf16])
    func threadSplitIsBitIdentical(dtype: SafeTensorsDType) {
        let shapes = [(130, 200), (64, 96), (300, 64), (9, 1000)]
        let weights = shapes.enumerated().map { Stored(rows: $1.0, columns: $1.1, dtype: dtype, seed: UInt64($0 + 5)) }
        defer { weights.forEach { $0.bytes.deallocate() } }
        var g = SeededGenerator(seed: 4)
        for n in [1, 3, 6, Kernels.fewInputRows + 1] {
            // The GEMM path (more than `fewInputRows` inputs) on the two smaller shapes only: debug builds run it slowly.
            let products = weights.prefix(n > Kernels.fewInputRows ? 2 : 4).map { w in
                (w, (0..<(n * w.matrix.columns)).map { _ in g.nextNormal() }, n)
            }
            let one = multiply(products, threads: 1, minimumBytesPerThread: 0)
            for threads in [2, 3] {
                let split = multiply(products, threads: threads, minimumBytesPerThread: 0)
                #expect(
                    zip(one, split).allSatisfy { zip($0, $1).allSatisfy { $0.bitPattern == $1.bitPattern } },
                    "\(dtype) n \(n) threads \(threads)")
            }
        }
    }

    /// Products that read one input (q, k and v; an expert's gate and up) share its laid-out
    /// copy: their outputs equal those of the same products given separate copies of the input,
    /// bit for bit, on one thread and two; a product reading only a prefix of the same memory
    /// (fewer columns) or fewer of its rows is laid out on its own.
    @Test(arguments: [SafeTensorsDType.f32, .f16, .bf16])
    func productsSharingAnInputMatchSeparateCopies(dtype: SafeTensorsDType) {
        let columns = 200
        let weights = [(30, columns), (130, columns), (64, columns), (9, columns), (40, 96)].enumerated().map {
            Stored(rows: $1.0, columns: $1.1, dtype: dtype, seed: UInt64($0 + 11))
        }
        defer { weights.forEach { $0.bytes.deallocate() } }
        var g = SeededGenerator(seed: 12)
        for n in [1, 3] {
            let x = (0..<(n * columns)).map { _ in g.nextNormal() }
            let shared = UnsafeMutablePointer<Float>.allocate(capacity: x.count)
            shared.initialize(from: x, count: x.count)
            defer { shared.deallocate() }
            // The first reads one row fewer of the memory the next three read (first, so that a
            // layout wrongly shared with them would be one it made, short of their rows); the
            // fifth reads the first 96 columns of each row as a row of its own (rows 96 apart).
            let counts = [max(1, n - 1), n, n, n, n * columns / 96]
            let outputs = weights.indices.map { i in UnsafeMutablePointer<Float>.allocate(capacity: counts[i] * weights[i].matrix.rows) }
            defer { outputs.forEach { $0.deallocate() } }
            let separate = multiply(
                weights.indices.map { i in (weights[i], Array(x.prefix(counts[i] * weights[i].matrix.columns)), counts[i]) }, threads: 1)
            for threads in [1, 2] {
                Kernels.multiply(
                    weights.indices.map { i in WeightProduct(weight: weights[i].matrix, input: shared, output: outputs[i], count: counts[i])
                    },
                    threads: threads, unitBytes: 512, minimumBytesPerThread: 0)
                for i in weights.indices {
                    let y = UnsafeBufferPointer(start: outputs[i], count: counts[i] * weights[i].matrix.rows)
                    #expect(
                        zip(y, separate[i]).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(dtype) n \(n) product \(i) threads \(threads)"
                    )
                }
            }
        }
    }

    /// The pair layout: each full chunk of 32 columns as its 16 even columns then its 16 odd
    /// ones, the ragged tail as it is; F32 weights read the input unchanged.
    @Test func pairLayoutPutsEvenColumnsBeforeOdd() {
        let k = 70
        let x = (0..<k).map(Float.init)
        var out = [Float](repeating: .nan, count: k)
        for interleaved in [true, false] {
            x.withUnsafeBufferPointer { xp in
                out.withUnsafeMutableBufferPointer {
                    Kernels.pairLayout(xp.baseAddress!, into: $0.baseAddress!, columns: k, interleaved: interleaved)
                }
            }
            let chunk = { (c: Int) in (0..<16).map { Float(c * 32 + 2 * $0) } + (0..<16).map { Float(c * 32 + 2 * $0 + 1) } }
            #expect(out == (interleaved ? chunk(0) + chunk(1) + [64, 65, 66, 67, 68, 69] : x), "interleaved \(interleaved)")
        }
    }

    /// The shares split the units into contiguous runs of about equal bytes, each taken from its
    /// front by its own thread; a thread whose share is done takes the others' from the back, so
    /// every unit is run exactly once even when one thread never starts.
    @Test func unitSharesHandOutEveryUnitOnce() {
        let equal = UnitShares(bytes: [Int](repeating: 100, count: 10), parts: 2)
        var alone: [Int] = []
        while let unit = equal.take(0) { alone.append(unit) }
        #expect(alone == [0, 1, 2, 3, 4, 9, 8, 7, 6, 5], "share 0 in order, then share 1 from its back")

        let uneven = UnitShares(bytes: [500, 100, 100, 100, 100, 100], parts: 2)
        #expect(uneven.take(1) == 1, "the first unit alone is half the bytes")

        var g = SeededGenerator(seed: 8)
        for parts in [2, 3] {
            let bytes = (0..<200).map { _ in Int(g.next() % 1000) + 1 }
            let shares = UnitShares(bytes: bytes, parts: parts)
            let taken = Mutex<[Int]>([])
            DispatchQueue.concurrentPerform(iterations: parts) { side in
                var mine: [Int] = []
                while let unit = shares.take(side) { mine.append(unit) }
                taken.withLock { $0 += mine }
            }
            #expect(taken.withLock { $0.sorted() } == Array(0..<200), "\(parts) shares")
        }
    }
}
