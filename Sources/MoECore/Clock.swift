#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

// The one clock for how long something takes: monotonic, so a wall-clock adjustment (NTP, a
// changed time zone or date) never shows up as a negative or inflated duration. `Date()` is
// for dates a person reads (timestamps in files), not for durations.

/// Nanoseconds from a monotonic clock; only differences between two readings mean anything.
public func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

/// Seconds elapsed since `start`, a `monotonicNanoseconds()` reading.
public func secondsSince(_ start: UInt64) -> Double { Double(monotonicNanoseconds() - start) / 1e9 }
