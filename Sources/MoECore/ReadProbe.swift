import CMemoryHints
import Dispatch
import Foundation

/// How fast this machine's cores can read memory, measured several ways on one large buffer,
/// beside the rate the stored-dtype matrix-vector kernel streams the same buffer at: whether a
/// decode that reads N bytes a token could go faster than it does (`moescope bench --read-probe`).
public enum ReadProbe {
    public struct Variant: Sendable {
        public let name: String
        /// GB/s of each pass.
        public var rates: [Double] = []
    }

    /// `rounds` rounds over a buffer of `megabytes` (64-byte aligned, every page faulted in
    /// first); each round runs every variant once, in turn, so a change in the machine's load
    /// touches all of them alike. Two-thread variants split the buffer into two contiguous
    /// halves, one per core, and time the pass from the start of both to the end of the last.
    /// The last variants are the measurements `bench --model` takes its limit and kernel rate
    /// from, one pass each a round: a separate 512 MB buffer allocated and written just before
    /// the pass (bench itself keeps the best of 3 or 5 such passes).
    public static func run(megabytes: Int = 1024, rounds: Int = 9) -> [Variant] {
        let bytes = megabytes << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer { buffer.deallocate() }
        // BF16 0.01 everywhere: finite weights for the kernel, any bytes for a plain read.
        buffer.initializeMemory(as: UInt16.self, repeating: 0x3C24, count: bytes / 2)
        let columns = 2048
        let matrix = StoredMatrix(base: UnsafeRawPointer(buffer), dtype: .bf16, rows: bytes / (2 * columns), columns: columns)
        let input = UnsafeMutablePointer<Float>.allocate(capacity: columns)
        let output = UnsafeMutablePointer<Float>.allocate(capacity: matrix.rows)
        defer {
            input.deallocate()
            output.deallocate()
        }
        input.initialize(repeating: 1, count: columns)
        let product = WeightProduct(weight: matrix, input: UnsafePointer(input), output: output, count: 1)

        let base = UnsafeRawPointer(buffer)
        let token = tokenCalls(base, bytes: bytes, input: UnsafePointer(input), output: output, outputRows: matrix.rows)
        let tokenBytes = token.joined().reduce(0) { $0 + $1.weight.byteCount }
        let passes: [(String, () -> Void)] = [
            ("plain read, 1 thread", { _ = read(base, bytes: bytes, prefetchDistance: 0) }),
            ("plain read, 1 thread, prefetcht2 +1 KB", { _ = read(base, bytes: bytes, prefetchDistance: 1024) }),
            ("plain read, 2 threads (dispatch queue)", { readHalves(base, bytes: bytes, prefetchDistance: 0, onWorker: false) }),
            ("plain read, 2 threads (spinning worker)", { readHalves(base, bytes: bytes, prefetchDistance: 0, onWorker: true) }),
            ("plain read, 2 threads, prefetcht2 +512 B", { readHalves(base, bytes: bytes, prefetchDistance: 512, onWorker: true) }),
            ("plain read, 2 threads, prefetcht2 +1 KB", { readHalves(base, bytes: bytes, prefetchDistance: 1024, onWorker: true) }),
            ("plain read, 2 threads, prefetcht2 +4 KB", { readHalves(base, bytes: bytes, prefetchDistance: 4096, onWorker: true) }),
            ("BF16 matrix-vector kernel, 1 thread", { Kernels.multiply([product], threads: 1) }),
            ("BF16 matrix-vector kernel, 2 threads", { Kernels.multiply([product], threads: 2) }),
        ]
        // A decoded OLMoE token's products: as the 17 calls a token makes on one thread, in one
        // call on two, then as the 17 calls with the rows split in units of 512, 256 and 128 KB.
        let tokenPasses: [(String, () -> Void)] =
            [
                ("token's 17 calls, 1 thread", { for call in token { Kernels.multiply(call, threads: 1) } }),
                ("token's products in 1 call, 2 threads", { Kernels.multiply(token.flatMap { $0 }, threads: 2) }),
            ]
            + [512, 256, 128].map { kb in
                (
                    "token's 17 calls, 2 threads, \(kb) KB units",
                    { for call in token { Kernels.multiply(call, threads: 2, unitBytes: kb << 10) } }
                )
            }
        // What `bench --model` takes its limit and kernel rate from: a 512 MB buffer allocated
        // and written just before one timed pass (bench keeps the best of several such passes).
        let fresh: [(String, () -> Double)] = [1, 2].flatMap { threads in
            [
                (
                    "bench's read: fresh 512 MB, \(threads) thread\(threads == 1 ? "" : "s")",
                    {
                        MachineLimits.readBandwidth(threads: threads, repeats: 1)
                    }
                ),
                (
                    "bench's BF16 kernel: fresh 512 MB, \(threads) thread\(threads == 1 ? "" : "s")",
                    {
                        MachineLimits.matrixVectorBandwidth(dtype: .bf16, threads: threads, repeats: 1)
                    }
                ),
            ]
        }
        let all = passes.map { ($0.0, $0.1, bytes) } + tokenPasses.map { ($0.0, $0.1, tokenBytes) }
        var variants = all.map { Variant(name: $0.0) } + fresh.map { Variant(name: $0.0) }
        for (_, pass, _) in all { pass() }  // warm-up: the worker started, the code paged in
        for _ in 0..<max(1, rounds) {
            for (i, (_, pass, passBytes)) in all.enumerated() {
                let began = monotonicNanoseconds()
                pass()
                variants[i].rates.append(Double(passBytes) / Double(monotonicNanoseconds() - began))
            }
            for (i, (_, measure)) in fresh.enumerated() { variants[all.count + i].rates.append(measure() / 1e9) }
        }
        return variants
    }

    /// The products of one OLMoE-1B-7B-width token (4 layers: q, k, v; o; 8 experts' gate and
    /// up; their down; then the LM head), laid one after another in `base`, grouped into the
    /// calls `HubModel.forward` makes.
    static func tokenCalls(
        _ base: UnsafeRawPointer, bytes: Int, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, outputRows: Int
    )
        -> [[WeightProduct]]
    {
        var (at, outputAt) = (0, 0)
        func product(_ rows: Int, _ columns: Int) -> WeightProduct {
            let matrix = StoredMatrix(base: base + at, dtype: .bf16, rows: rows, columns: columns)
            defer { (at, outputAt) = (at + matrix.byteCount, outputAt + rows) }
            precondition(
                at + matrix.byteCount <= bytes && outputAt + rows <= outputRows, "the probe's buffer holds a token's weights and outputs")
            return WeightProduct(weight: matrix, input: input, output: output + outputAt, count: 1)
        }
        var calls: [[WeightProduct]] = []
        for _ in 0..<4 {
            calls.append((0..<3).map { _ in product(2048, 2048) })
            calls.append([product(2048, 2048)])
            calls.append((0..<16).map { _ in product(1024, 2048) })
            calls.append((0..<8).map { _ in product(2048, 1024) })
        }
        calls.append([product(50_304, 2048)])
        return calls
    }

    /// The buffer's two halves read at once, one per core: through the helper thread
    /// (spinning, as during a decode) or a dispatch-queue wake-up (what `readBandwidth` uses).
    static func readHalves(_ base: UnsafeRawPointer, bytes: Int, prefetchDistance: Int, onWorker: Bool) {
        let job = HalvesJob(base: base, half: bytes / 2 / 256 * 256, prefetchDistance: prefetchDistance)
        if onWorker, let helper = HelperThread.shared {
            let context = UnsafeMutablePointer<HalvesJob>.allocate(capacity: 1)
            context.initialize(to: job)
            defer { context.deallocate() }
            return helper.run(UnsafeMutableRawPointer(context), readHalf)
        }
        let shared = job
        DispatchQueue.concurrentPerform(iterations: 2) { side in
            shared.sink(read(shared.base + side * shared.half, bytes: shared.half, prefetchDistance: shared.prefetchDistance))
        }
    }

    static let readHalf: HelperThread.Share = { context, side in
        let job = context.assumingMemoryBound(to: HalvesJob.self).pointee
        job.sink(read(job.base + side * job.half, bytes: job.half, prefetchDistance: job.prefetchDistance))
    }

    struct HalvesJob: @unchecked Sendable {
        let base: UnsafeRawPointer
        let half: Int
        let prefetchDistance: Int
        func sink(_ sum: Float) { if sum.isNaN { print("", terminator: "") } }
    }

    /// Sum of `bytes` (a multiple of 256) as Floats: 64-byte loads into four independent
    /// chains; with a distance, each 64-byte line `prefetchDistance` ahead is hinted into L2
    /// (`prefetcht2`, as the kernel does) as the current one is read.
    @inline(never)
    static func read(_ p: UnsafeRawPointer, bytes: Int, prefetchDistance: Int) -> Float {
        typealias V = SIMD16<Float>
        var s0 = V()
        var s1 = V()
        var s2 = V()
        var s3 = V()
        var offset = 0
        if prefetchDistance > 0 {
            // Hints stop short of the end: the last lines are read unhinted.
            let hinted = max(0, bytes - prefetchDistance) / 256 * 256
            while offset < hinted {
                let ahead = p + offset + prefetchDistance
                moescope_prefetch_line(ahead)
                moescope_prefetch_line(ahead + 64)
                moescope_prefetch_line(ahead + 128)
                moescope_prefetch_line(ahead + 192)
                s0 += p.loadUnaligned(fromByteOffset: offset, as: V.self)
                s1 += p.loadUnaligned(fromByteOffset: offset + 64, as: V.self)
                s2 += p.loadUnaligned(fromByteOffset: offset + 128, as: V.self)
                s3 += p.loadUnaligned(fromByteOffset: offset + 192, as: V.self)
                offset += 256
            }
        }
        while offset < bytes {
            s0 += p.loadUnaligned(fromByteOffset: offset, as: V.self)
            s1 += p.loadUnaligned(fromByteOffset: offset + 64, as: V.self)
            s2 += p.loadUnaligned(fromByteOffset: offset + 128, as: V.self)
            s3 += p.loadUnaligned(fromByteOffset: offset + 192, as: V.self)
            offset += 256
        }
        return (s0 + s1 + s2 + s3).sum()
    }
}
