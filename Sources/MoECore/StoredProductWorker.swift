import Dispatch
import Foundation
import Synchronization

/// The units of one `Kernels.multiply` call in `parts` contiguous shares of about equal bytes.
/// Each thread takes its own share's units from the front, in memory order, so the kernel's
/// look-ahead hints rows the same thread reads next (with units dealt out in turn, each unit's
/// last hints landed in the other core's cache); once its share is done a thread takes the
/// others' last units, so a thread whose core is busy with another process does less of the
/// work instead of holding the call up. Which thread runs a unit changes no result.
final class UnitShares: @unchecked Sendable {
    let parts: Int
    /// Each share's (next unit, end) packed as end << 32 | next, a cache line apart.
    private let cursors: UnsafeMutablePointer<Atomic<UInt64>>
    private static let spacing = 8

    init(bytes: [Int], parts: Int) {
        self.parts = parts
        cursors = .allocate(capacity: parts * Self.spacing)
        let total = bytes.reduce(0, +)
        var first = 0
        var running = 0
        for share in 0..<parts {
            var end = first
            // The share ends where the running total first reaches its fraction of the bytes.
            let target = share == parts - 1 ? total : total * (share + 1) / parts
            while end < bytes.count, running < target {
                running += bytes[end]
                end += 1
            }
            (cursors + share * Self.spacing).initialize(to: Atomic(UInt64(end) << 32 | UInt64(first)))
            first = end
        }
    }

    deinit {
        for share in 0..<parts { (cursors + share * Self.spacing).deinitialize(count: 1) }
        cursors.deallocate()
    }

    /// The next unit for the thread of share `side`: its own share's front, else another's back.
    func take(_ side: Int) -> Int? {
        if let unit = take(share: side, fromFront: true) { return unit }
        for other in 1..<max(1, parts) {
            if let unit = take(share: (side + other) % parts, fromFront: false) { return unit }
        }
        return nil
    }

    private func take(share: Int, fromFront: Bool) -> Int? {
        let cursor = cursors + share * Self.spacing
        var packed = cursor.pointee.load(ordering: .relaxed)
        while true {
            let (next, end) = (packed & 0xFFFF_FFFF, packed >> 32)
            guard next < end else { return nil }
            let taken = fromFront ? end << 32 | (next + 1) : (end - 1) << 32 | next
            let (exchanged, seen) = cursor.pointee.compareExchange(expected: packed, desired: taken, ordering: .relaxed)
            if exchanged { return Int(fromFront ? next : end - 1) }
            packed = seen
        }
    }
}

/// The second core for the stored-dtype products of a decoded token (`Kernels.multiply`): one
/// persistent thread that runs the second share of each call while the caller runs the first.
///
/// A token of an OLMoE-width model makes 17 such calls, with attention, norms and routing
/// between them on one core; a dispatch-queue wake-up per call cost tens of microseconds.
/// This thread spins on an atomic counter for a while after each job (`spinLimit` polls), so
/// the next call of the same token reaches it in well under a microsecond, and sleeps on a
/// semaphore once decoding stops. The same protocol as `HelperThread` (moescope's own models'
/// products), kept separate because its job is a different kind of work (a `MultiplyCall`).
final class StoredProductWorker: @unchecked Sendable {
    /// The worker of this process, started on first use; nil on one core (`Kernels.threads`).
    static let shared: StoredProductWorker? = Kernels.threads > 1 ? StoredProductWorker() : nil

    /// Jobs posted and jobs the worker has finished: equal when it is idle.
    private let posted = Atomic<Int>(0)
    private let finished = Atomic<Int>(0)
    /// The last job someone started: the worker, or the caller when the worker had not yet.
    private let claimed = Atomic<Int>(0)
    private let sleeping = Atomic<Bool>(false)
    /// Held by the one caller whose job the worker has.
    private let taken = Atomic<Bool>(false)
    private let wake = DispatchSemaphore(value: 0)
    /// The current job, written before `posted` is raised: a context (an unretained
    /// `Kernels.MultiplyCall`) and the function that runs a share of it.
    private var job: (context: UnsafeMutableRawPointer, share: Share)?
    typealias Share = @convention(c) (UnsafeMutableRawPointer, Int) -> Void
    /// Polls of the counter before the worker goes to sleep (a poll is a few nanoseconds; this
    /// outlasts the serial work between two products of a token).
    static let spinLimit = 200_000

    private init() {
        let thread = Thread { [unowned self] in self.serve() }
        thread.name = "moescope-stored-products"
        thread.start()
    }

    /// Runs `share(context, 1)` on the worker while `share(context, 0)` runs on this thread;
    /// returns when both are done. False, having run nothing, while another caller has the
    /// worker. Share 0 must leave nothing of share 1 undone that the worker has not taken.
    func run(_ context: UnsafeMutableRawPointer, _ share: Share) -> Bool {
        guard taken.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        defer { taken.store(false, ordering: .releasing) }
        job = (context, share)
        let ticket = posted.add(1, ordering: .sequentiallyConsistent).newValue
        if sleeping.load(ordering: .sequentiallyConsistent) { wake.signal() }
        share(context, 0)
        // A worker that has not started by now finds nothing left; it must not start late
        // and read a call that is gone.
        if claimed.compareExchange(expected: ticket - 1, desired: ticket, ordering: .acquiringAndReleasing).exchanged { return true }
        var polls = 0
        while finished.load(ordering: .acquiring) != ticket {
            polls += 1
            if polls > Self.spinLimit { sched_yield() }
        }
        return true
    }

    private func serve() {
        var seen = 0
        while true {
            var polls = 0
            while posted.load(ordering: .acquiring) == seen {
                polls += 1
                guard polls > Self.spinLimit else { continue }
                // Idle: sleep until the next post. `run` raises `posted` before it reads
                // `sleeping`, this sets `sleeping` before it reads `posted`, so one of the two
                // sees the other and no post is missed.
                sleeping.store(true, ordering: .sequentiallyConsistent)
                if posted.load(ordering: .sequentiallyConsistent) == seen { wake.wait() }
                sleeping.store(false, ordering: .sequentiallyConsistent)
                polls = 0
            }
            seen += 1
            guard claimed.compareExchange(expected: seen - 1, desired: seen, ordering: .acquiringAndReleasing).exchanged else {
                continue  // the caller finished it alone
            }
            if let job { job.share(job.context, 1) }
            finished.store(seen, ordering: .releasing)
        }
    }
}
