import Dispatch
import Foundation
import Synchronization

/// A second core for the small products of decoding one token: one persistent thread that
/// runs half of a product's output panels (`Kernels.multiplyRows`) while the caller runs the
/// other half.
///
/// A decoded token of moescope's own model makes about forty products of a few hundred
/// microseconds in all; waking a thread through the dispatch queue costs microseconds per
/// product, more than half of one saves. This thread instead spins on an atomic counter for a
/// while after each job (`spinLimit` polls, some tens of microseconds), so the next product of the same token
/// reaches it in a fraction of a microsecond, and sleeps on a semaphore once decoding stops.
/// The caller splits its work by output, and each output is computed exactly as on one
/// thread, so results do not depend on whether the helper runs.
public final class HelperThread: @unchecked Sendable {
    /// The helper of this process, started on first use; nil on one core (`Kernels.threads`).
    public static let shared: HelperThread? = Kernels.threads > 1 ? HelperThread() : nil

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
    /// The current job, written before `posted` is raised and read after it is seen: plain
    /// pointers, so no reference count is touched by both cores (that alone cost microseconds).
    private var job = UnsafeBufferPointer<Kernels.PanelRun>(start: nil, count: 0)
    /// Polls of the counter before the helper goes to sleep (a poll is a few nanoseconds).
    static let spinLimit = 20_000

    private init() {
        let thread = Thread { [unowned self] in self.serve() }
        thread.name = "moescope-helper"
        thread.start()
    }

    /// Runs `runs` on the helper while `here` runs on this thread; returns when both are
    /// done. While another caller has the helper (two models decoding at once), both run
    /// here, one after the other.
    func run(_ runs: UnsafeBufferPointer<Kernels.PanelRun>, while here: () -> Void) {
        guard taken.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            here()
            for run in runs { run.run() }
            return
        }
        defer { taken.store(false, ordering: .releasing) }
        job = runs
        let ticket = posted.add(1, ordering: .sequentiallyConsistent).newValue
        if sleeping.load(ordering: .sequentiallyConsistent) { wake.signal() }
        here()
        if claimed.compareExchange(expected: ticket - 1, desired: ticket, ordering: .acquiringAndReleasing).exchanged {
            for run in runs { run.run() }  // the helper had not started: do its half here
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
            for run in job { run.run() }
            finished.store(seen, ordering: .releasing)
        }
    }
}
