import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The two physical limits the benchmarks compare against: the core's peak FP32 FMA rate and
/// the rate memory can be read at.
public enum MachineLimits {
    /// Peak FP32 rate of one core in GFLOP/s, best of `repeats` timed loops. The loop is run at
    /// two vector widths — 8 lanes (one AVX2 register) × 12 chains and 16 lanes (one AVX-512
    /// register) × 16 chains — and the faster is the machine's: each keeps more independent FMA
    /// chains than latency × FMA ports (4 × 2 on current x86), so the loop is throughput-bound,
    /// and neither exceeds its register file (16 ymm on AVX2, 32 zmm on AVX-512), so nothing
    /// spills. On an AVX2-only build the 16-lane loop splits into 32 ymm chains and spills;
    /// it then loses to the 8-lane one, which is the real peak there.
    public static func fmaPeak(repeats: Int = 5) -> Double {
        let iterations = 1_000_000
        var best = 0.0
        let operands = UnsafeMutablePointer<Float>.allocate(capacity: 2)
        defer { operands.deallocate() }
        operands[0] = 0.999_999
        operands[1] = 1e-7
        for _ in 0..<max(1, repeats) {
            var began = monotonicNanoseconds()
            var sink = fma8x12(operands, iterations: iterations)
            var seconds = secondsSince(began)
            best = max(best, Double(iterations * 12 * 8 * 2) / seconds / 1e9)
            began = monotonicNanoseconds()
            sink += fma16x16(operands, iterations: iterations)
            seconds = secondsSince(began)
            best = max(best, Double(iterations * 16 * 16 * 2) / seconds / 1e9)
            if sink.isNaN { print("", terminator: "") }  // keeps the loops' results alive
        }
        return best
    }

    @inline(never)
    static func fma8x12(_ operands: UnsafePointer<Float>, iterations: Int) -> Float {
        typealias V = SIMD8<Float>
        let x = V(repeating: operands[0])
        let y = V(repeating: operands[1])
        var a0 = V()
        var a1 = V()
        var a2 = V()
        var a3 = V()
        var a4 = V()
        var a5 = V()
        var a6 = V()
        var a7 = V()
        var a8 = V()
        var a9 = V()
        var a10 = V()
        var a11 = V()
        for _ in 0..<iterations {
            a0.addProduct(x, y)
            a1.addProduct(x, y)
            a2.addProduct(x, y)
            a3.addProduct(x, y)
            a4.addProduct(x, y)
            a5.addProduct(x, y)
            a6.addProduct(x, y)
            a7.addProduct(x, y)
            a8.addProduct(x, y)
            a9.addProduct(x, y)
            a10.addProduct(x, y)
            a11.addProduct(x, y)
        }
        return (a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11).sum()
    }

    @inline(never)
    static func fma16x16(_ operands: UnsafePointer<Float>, iterations: Int) -> Float {
        typealias V = SIMD16<Float>
        let x = V(repeating: operands[0])
        let y = V(repeating: operands[1])
        var a0 = V()
        var a1 = V()
        var a2 = V()
        var a3 = V()
        var a4 = V()
        var a5 = V()
        var a6 = V()
        var a7 = V()
        var a8 = V()
        var a9 = V()
        var a10 = V()
        var a11 = V()
        var a12 = V()
        var a13 = V()
        var a14 = V()
        var a15 = V()
        for _ in 0..<iterations {
            a0.addProduct(x, y)
            a1.addProduct(x, y)
            a2.addProduct(x, y)
            a3.addProduct(x, y)
            a4.addProduct(x, y)
            a5.addProduct(x, y)
            a6.addProduct(x, y)
            a7.addProduct(x, y)
            a8.addProduct(x, y)
            a9.addProduct(x, y)
            a10.addProduct(x, y)
            a11.addProduct(x, y)
            a12.addProduct(x, y)
            a13.addProduct(x, y)
            a14.addProduct(x, y)
            a15.addProduct(x, y)
        }
        return (a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11 + a12 + a13 + a14 + a15).sum()
    }

    /// Memory read bandwidth in bytes/s with `threads` cores reading disjoint halves (thirds…)
    /// of a buffer of `megabytes` (far larger than any cache), best of `repeats` passes: the
    /// rate a memory-bound decode can at best stream its weights at.
    public static func readBandwidth(threads: Int, megabytes: Int = 512, repeats: Int = 5) -> Double {
        let count = megabytes << 18  // Floats
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { buffer.deallocate() }
        buffer.initialize(repeating: 1, count: count)  // fault every page in first
        return readBandwidth(of: UnsafeRawPointer(buffer), bytes: count * 4, threads: threads, repeats: repeats)
    }

    /// The same read over memory that is already there (a model's mapped weights): `threads`
    /// cores each summing a contiguous part of the `bytes` at `base`, best of `repeats` passes.
    /// A buffer allocated and written just before it is read (above) reads faster on some
    /// machines than memory that has been in use a while, such as the page cache holding weights.
    public static func readBandwidth(of base: UnsafeRawPointer, bytes: Int, threads: Int, repeats: Int) -> Double {
        let parts = max(1, threads)
        let share = bytes / parts / 256 * 256
        let address = UInt(bitPattern: base)
        var best = 0.0
        for _ in 0..<max(1, repeats) {
            let began = monotonicNanoseconds()
            DispatchQueue.concurrentPerform(iterations: parts) { part in
                let base = UnsafeRawPointer(bitPattern: address)! + part * share
                if ReadProbe.read(base, bytes: share, prefetchDistance: 0).isNaN { print("", terminator: "") }
            }
            let seconds = secondsSince(began)
            best = max(best, Double(parts * share) / seconds)
        }
        return best
    }

    /// The rate, in bytes/s, at which `Kernels.multiply` streams a matrix of `megabytes` of
    /// `dtype` weights (rows of 2048 columns) against one input row — a decoded token's
    /// matrix-vector product — on `threads` cores, best of `repeats` passes. Beside
    /// `readBandwidth` on the same threads it says how close the kernel comes to a plain read
    /// of the same bytes; with `megabytes` small enough to stay in cache it says how far the
    /// kernel's arithmetic is from being the limit.
    public static func matrixVectorBandwidth(dtype: SafeTensorsDType, threads: Int, megabytes: Int = 512, repeats: Int = 5) -> Double {
        let columns = 2048
        let rows = max(4, (megabytes << 20) / (columns * dtype.byteSize) / 4 * 4)
        let bytes = rows * columns * dtype.byteSize
        let weights = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer { weights.deallocate() }
        // Small finite weights in every dtype (fills and faults every page in first).
        switch dtype {
        case .f32: weights.initializeMemory(as: Float.self, repeating: 0.01, count: bytes / 4)
        case .bf16: weights.initializeMemory(as: UInt16.self, repeating: 0x3C24, count: bytes / 2)
        default: weights.initializeMemory(as: UInt16.self, repeating: Float16(0.01).bitPattern, count: bytes / 2)
        }
        let input = UnsafeMutablePointer<Float>.allocate(capacity: columns)
        let output = UnsafeMutablePointer<Float>.allocate(capacity: rows)
        defer {
            input.deallocate()
            output.deallocate()
        }
        input.initialize(repeating: 1, count: columns)
        let product = WeightProduct(
            weight: StoredMatrix(base: UnsafeRawPointer(weights), dtype: dtype, rows: rows, columns: columns),
            input: UnsafePointer(input), output: output, count: 1)
        Kernels.multiply([product], threads: threads)  // warm-up
        var best = 0.0
        for _ in 0..<max(1, repeats) {
            let began = monotonicNanoseconds()
            Kernels.multiply([product], threads: threads)
            best = max(best, Double(bytes) / (secondsSince(began)))
        }
        return best
    }

    /// The process's peak resident memory (VmHWM) and what is resident now, split into
    /// anonymous memory and mapped files (weights touched), in bytes, from /proc/self/status.
    public static func residentMemory() -> (peak: Int, anonymous: Int, file: Int) {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return (0, 0, 0) }
        func field(_ name: String) -> Int {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }),
                let kb = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
            else { return 0 }
            return kb * 1024
        }
        return (field("VmHWM"), field("RssAnon"), field("RssFile"))
    }
}
