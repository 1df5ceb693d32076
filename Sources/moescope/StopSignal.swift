import Foundation
import Synchronization

/// SIGINT / SIGTERM / SIGHUP as a flag that long-running commands poll between units of work, so they
/// stop at a clean point (training saves its state first) instead of dying mid-write.
enum StopSignal {
    private static let received = Atomic<Int32>(0)

    static func install() {
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            Glibc.signal(signal) { number in StopSignal.received.store(number, ordering: .relaxed) }
        }
    }

    /// The signal that arrived, if any.
    static var pending: Int32? {
        let value = received.load(ordering: .relaxed)
        return value == 0 ? nil : value
    }
}
