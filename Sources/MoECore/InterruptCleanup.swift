import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Files being written that SIGINT, SIGTERM or SIGHUP must not leave behind (a ^C during
/// `bench` left a 1 GB `.trace.safetensors.PID.tmp`): the signal removes them, then ends the
/// process as it would have, so the exit status still names it. Only signals whose action is
/// the default are taken over: training handles them itself (it stops at a clean point and
/// saves), and a signal the shell ignores stays ignored. What a SIGKILL leaves, the next write
/// to the same target removes (`removeStaleTemporaryFiles`).
public enum InterruptCleanup {
    static let capacity = 4
    /// C strings, read by the signal handler (no Swift array: nothing it does may allocate).
    nonisolated(unsafe) fileprivate static let slots: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> = {
        let slots = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: capacity)
        slots.initialize(repeating: nil, count: capacity)
        return slots
    }()

    /// Taken by `register` and `unregister` (two threads may write files at once); never by
    /// the handler.
    private static let slotsLock = NSLock()

    public static func register(_ path: String) {
        slotsLock.lock()
        defer { slotsLock.unlock() }
        guard let free = (0..<capacity).first(where: { slots[$0] == nil }) else { return }
        slots[free] = strdup(path)
        for number in [SIGINT, SIGTERM, SIGHUP] {
            var current = sigaction()
            guard sigaction(number, nil, &current) == 0, current.__sigaction_handler.sa_handler == nil else { continue }
            signal(number, removeRegisteredAndEnd)
        }
    }

    /// The slot is emptied but its string is not freed: a handler on another thread may have
    /// read the pointer an instant before (a path's bytes per finished write are kept).
    public static func unregister(_ path: String) {
        slotsLock.lock()
        defer { slotsLock.unlock() }
        for index in 0..<capacity {
            if let held = slots[index], String(cString: held) == path { slots[index] = nil }
        }
    }
}

/// Async-signal-safe: unlink, signal and raise only.
private func removeRegisteredAndEnd(_ number: Int32) {
    for index in 0..<InterruptCleanup.capacity { if let path = InterruptCleanup.slots[index] { unlink(path) } }
    signal(number, SIG_DFL)
    raise(number)
}
