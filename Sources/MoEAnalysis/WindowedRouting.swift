import Foundation
import MoECore

/// How `analyze` routes a long text: cut into context-length windows, several windows a batch
/// (`RoutingModel.route`), the batches handed out to one worker thread per core as each
/// finishes its last, while the calling thread summarises the finished ones in text order.
/// No core waits for another between batches (a pair of batches run side by side and joined
/// left the faster core idle until the slower was done, and on a busy machine one descheduled
/// worker held up both), and the summaries overlap the forward passes. Every batch is routed
/// on one core, so the result is the same for any thread count.
public enum WindowedRouting {
    /// Tokens whose every expert output norm is recorded (the "Closer Look" columns): running
    /// all E experts costs E/k times the experts' work, so a long text measures them on its
    /// first 8,192 tokens only; shorter inputs (the default corpus sample included) on every token.
    public static let normSampleTokens = 8_192

    /// Context windows run as one batch: four 256-token windows give every expert about 256
    /// rows a product (as a training shard does), where one window gave it 64.
    public static let windowsPerBatch = 4

    /// Batches started and not yet summarised: one a worker plus the one being summarised,
    /// which bounds the traces held at once (a large model's windows are long) to one batch
    /// more than the two side-by-side batches this replaced held.
    static func batchesInFlight(workers: Int) -> Int { workers + 1 }

    /// One batch: its windows, and whether they record every expert's output norm.
    struct Batch: Sendable {
        var windows: [[Int]]
        var allExpertNorms: Bool
    }

    /// `ids` cut into windows and batches; a batch's windows all record every expert's norm
    /// or none do, and the first windows up to `normSampleTokens` (counting those of earlier
    /// texts, `normTokens`) do.
    static func batches(_ ids: [Int], contextLength: Int, normTokens: inout Int) -> [Batch] {
        let windows = stride(from: 0, to: ids.count, by: contextLength).map { Array(ids[$0..<min(ids.count, $0 + contextLength)]) }
        var batches: [Batch] = []
        var next = 0
        while next < windows.count {
            let withNorms = normTokens < normSampleTokens
            var batch = Batch(windows: [], allExpertNorms: withNorms)
            while batch.windows.count < windowsPerBatch && next < windows.count && (normTokens < normSampleTokens) == withNorms {
                if withNorms { normTokens += windows[next].count }
                batch.windows.append(windows[next])
                next += 1
            }
            batches.append(batch)
        }
        return batches
    }

    /// Routes `ids` and hands each window's routing to `consume`, in text order, on the calling
    /// thread, so a long text's routing is summarised and dropped as it goes. The workers also
    /// check each window for NaN and ±∞ and lay its routing out as the summaries read it
    /// (`RoutedWindow.block`), so the calling thread only summarises. Stops at the first NaN or
    /// ±∞ in text order (`InferenceError.nonFinite`), or at the first error `consume` throws;
    /// no worker is left running either way. `threads`: worker threads (1 runs all on the
    /// calling thread; a text of one batch splits its products over the threads instead).
    public static func route(
        _ ids: [Int], _ model: any RoutingModel, normTokens: inout Int, threads: Int = Kernels.threads,
        consume: (RoutedWindow) throws -> Void
    ) throws {
        try InferenceError.check(count: ids.count)  // any length: it is routed a window at a time
        HeapReuse.enable()  // every batch frees and reallocates the same MB-sized activations
        let batches = batches(ids, contextLength: model.contextLength, normTokens: &normTokens)
        func summarise(_ routed: [Result<RoutedWindow, Error>]) throws {
            for window in routed { try consume(try window.get()) }
        }
        let workers = min(max(1, threads), batches.count)
        guard workers > 1 else {
            for batch in batches {
                try summarise(try model.route(batch, threads: max(1, threads)))
            }
            return
        }
        let queue = BatchQueue(batches: batches, model: model, workers: workers, inFlight: batchesInFlight(workers: workers))
        for _ in 0..<workers {
            let worker = Thread { queue.work() }
            worker.stackSize = 8 << 20
            worker.start()
        }
        defer { queue.stopAndWaitForWorkers() }
        for index in batches.indices { try summarise(try queue.take(index).get()) }
    }
}

/// The batches of one `WindowedRouting.route` call and their results, shared by its worker
/// threads and the summarising thread under one lock. Workers take the next batch while
/// fewer than `inFlight` are started and not yet taken; the summariser takes results in order.
private final class BatchQueue: @unchecked Sendable {
    typealias Routed = [Result<RoutedWindow, Error>]
    let batches: [WindowedRouting.Batch]
    let model: any RoutingModel
    let inFlight: Int
    let workers: Int
    private let condition = NSCondition()
    private var results: [Result<Routed, Error>?]
    private var nextToRoute = 0
    private var taken = 0
    private var stopped = false
    private var finishedWorkers = 0

    init(batches: [WindowedRouting.Batch], model: any RoutingModel, workers: Int, inFlight: Int) {
        self.batches = batches
        self.model = model
        self.workers = workers
        self.inFlight = inFlight
        results = Array(repeating: nil, count: batches.count)
    }

    /// A worker thread's loop: route batches on one core until none are left or it is stopped.
    func work() {
        condition.lock()
        while true {
            while !stopped && nextToRoute < batches.count && nextToRoute >= taken + inFlight { condition.wait() }
            guard !stopped && nextToRoute < batches.count else { break }
            let index = nextToRoute
            nextToRoute += 1
            condition.unlock()
            let batch = batches[index]
            let result = Result { try model.route(batch, threads: 1) }
            condition.lock()
            results[index] = result
            condition.broadcast()
        }
        finishedWorkers += 1
        condition.broadcast()
        condition.unlock()
    }

    /// Batch `index`'s result, once routed (indices are taken in order, each once).
    func take(_ index: Int) -> Result<Routed, Error> {
        condition.lock()
        defer { condition.unlock() }
        while results[index] == nil { condition.wait() }
        let result = results[index]!
        results[index] = nil
        taken = index + 1
        condition.broadcast()
        return result
    }

    /// Tells the workers to stop after their current batch and waits until all `workers` have
    /// left `work` (so none outlives the call that started them).
    func stopAndWaitForWorkers() {
        condition.lock()
        stopped = true
        condition.broadcast()
        while finishedWorkers < workers { condition.wait() }
        condition.unlock()
    }
}

/// One context window's routing, as `WindowedRouting.route` hands it on: checked for NaN and
/// ±∞, laid out as the summaries read it (`block`), and as one trace a token on request.
public struct RoutedWindow: Sendable {
    /// Its routing as the summaries read it.
    public let block: RoutingBlock
    /// Whether every expert's output norm was recorded (the "Closer Look" sample).
    public let hasAllExpertNorms: Bool
    let batch: BatchRouting
    let rows: Range<Int>

    public var count: Int { rows.count }
    /// One `RoutingTrace` a token (built on request: the sample's norms and the tests read them).
    public var traces: [RoutingTrace] { batch.traces(rows: rows) }
}

extension RoutingModel {
    /// One batch routed: the norm-sample batches run the whole forward, next-token logits
    /// included, so every weight (each expert runs on every sample token) and the output are
    /// checked for NaN and ±∞ on the first batches; the others skip what no analysis reads
    /// (moescope's own models: the last layer's experts and the LM head). Each window is
    /// checked in turn: a window's result is its routing or the first problem in it, so the
    /// summariser meets the problems in text order.
    fileprivate func route(_ batch: WindowedRouting.Batch, threads: Int) throws -> [Result<RoutedWindow, Error>] {
        let routed = try routeBatch(
            sequences: batch.windows, allExpertNorms: batch.allExpertNorms, lastLogits: batch.allExpertNorms, threads: threads)
        return batch.windows.indices.map { s in
            if let problem = InferenceError.firstNonFinite(in: routed, sequence: s, routedLayers: routedLayers) { return .failure(problem) }
            let rows = routed.rows(ofSequence: s)
            return .success(
                RoutedWindow(
                    block: RoutingBlock(batch: routed, rows: rows), hasAllExpertNorms: batch.allExpertNorms, batch: routed, rows: rows))
        }
    }
}
