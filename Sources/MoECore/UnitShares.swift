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
