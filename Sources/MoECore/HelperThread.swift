import Dispatch
import Foundation
import Synchronization

/// A second core for the products of decoding one token: one persistent thread that runs one
/// share of a job while the caller runs the other.
///
/// A decoded token makes tens of products (about forty of a few hundred microseconds in all for
/// moescope's own model, 17 of a few milliseconds for an OLMoE-width checkpoint), with
/// attention, norms and routing between them on one core. Waking a thread through the dispatch
/// queue costs microseconds per product, more than half of a small one saves. This thread
/// instead spins on an atomic counter for a while after each job (`spinLimit` polls), so
/// the next product of the same token reaches it in a fraction of a microsecond, and sleeps on a
/// semaphore once decoding stops. Callers split their work by output, and each output is
/// computed exactly as on one thread, so results do not depend on which thread runs a share.
public final class HelperThread: @unchecked Sendable {
    /// The helper of this process, started on first use; nil on one core (`Kernels.threads`).
    public static let shared: HelperThread? = Kernels.threads > 1 ? HelperThread() : nil

    /// A share of a job: `share(context, 1)` runs on the helper, `share(context, 0)` on the
    /// caller. A C function of a plain pointer, so no reference count is touched by both cores
    /// (that alone cost microseconds a product).
    public typealias Share = @convention(c) (UnsafeMutableRawPointer, Int) -> Void

    /// Jobs posted and jobs the helper has finished: equal when it is idle.
    private let posted = Atomic<Int>(0)
    private let finished = Atomic<Int>(0)
    /// The last job someone started: the helper, or the caller when the helper had not yet
    /// (a helper descheduled by another process must not hold the caller up).
    private let claimed = Atomic<Int>(0)
    private let sleeping = Atomic<Bool>(false)
    /// Held by the one caller whose job the helper has.
    private let taken = Atomic<Bool>(false)
    private let wake = DispatchSemaphore(value: 0)
    /// The current job, written before `posted` is raised and read after it is seen.
    private var job: (context: UnsafeMutableRawPointer, share: Share)?
    /// Polls of the counter before the helper sleeps: longer than the serial work between two
    /// of a small model's products (a layer's attention and routing, 5–10 µs a token here).
    /// A poll here is about a cycle, so 20,000 polls ran out within a layer: the helper slept and
    /// each MoE layer paid a futex wake-up (perf: the caller in the kernel's wake path); 100,000
    /// (some tens of µs) keeps it awake through a token (measured in one A/B with other changes).
    /// A constant: a limit set per job, stored beside the counter the helper polls, slowed
    /// moescope's own decode by 15–20 % on two cores, and 200,000 polls looked slower in an
    /// earlier measurement (a spinning helper takes issue slots from the caller when the two
    /// vCPUs share a core). Between a large model's products the helper may sleep; its wake-up
    /// is small beside them. The caller waiting for the helper's share polls as long before it
    /// yields its core.
    static let spinLimit = 100_000

    private init() {
        let thread = Thread { [unowned self] in self.serve() }
        thread.name = "moescope-helper"
        thread.start()
    }

    /// Runs `share(context, 1)` on the helper while `share(context, 0)` runs on this thread;
    /// returns when both are done. If the helper has not started share 1 by the time share 0 is
    /// done, this thread runs it (a share that takes the other's units as it finishes leaves
    /// nothing to run). While another caller has the helper (two models decoding at once), both
    /// shares run here, one after the other.
    public func run(_ context: UnsafeMutableRawPointer, _ share: Share) {
        guard taken.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            share(context, 0)
            share(context, 1)
            return
        }
        defer { taken.store(false, ordering: .releasing) }
        job = (context, share)
        let ticket = posted.add(1, ordering: .sequentiallyConsistent).newValue
        if sleeping.load(ordering: .sequentiallyConsistent) { wake.signal() }
        share(context, 0)
        if claimed.compareExchange(expected: ticket - 1, desired: ticket, ordering: .acquiringAndReleasing).exchanged {
            share(context, 1)  // the helper had not started: run its share here
            return
        }
        var polls = 0
        while finished.load(ordering: .acquiring) != ticket {
            polls += 1
            if polls > Self.spinLimit { sched_yield() }
        }
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
                // sees the other and no post is missed (an extra signal only costs a poll).
                sleeping.store(true, ordering: .sequentiallyConsistent)
                if posted.load(ordering: .sequentiallyConsistent) == seen { wake.wait() }
                sleeping.store(false, ordering: .sequentiallyConsistent)
                polls = 0
            }
            seen += 1
            guard claimed.compareExchange(expected: seen - 1, desired: seen, ordering: .acquiringAndReleasing).exchanged else {
                continue  // the caller ran it
            }
            if let job { job.share(job.context, 1) }
            finished.store(seen, ordering: .releasing)
        }
    }
}
