#if os(Linux)
    /// glibc's `mallopt` (declared in malloc.h, which the Glibc module does not export).
    @_silgen_name("mallopt") private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
#endif

/// For work that allocates and frees the same large buffers over and over (a training step's
/// few hundred, up to 8 MB each; `analyze`'s batches of windows): by default glibc maps each
/// large buffer fresh and unmaps it on free, so every step paid for page faults and kernel
/// zeroing (a tenth of a training step in a profile, 3 % of `analyze`'s CPU); serving them from
/// the heap, and not trimming it, reuses the memory instead.
public enum HeapReuse {
    private static let enabled: Bool = {
        #if os(Linux)
            let (mmapThreshold, trimThreshold): (Int32, Int32) = (-3, -1)  // M_MMAP_THRESHOLD, M_TRIM_THRESHOLD (malloc.h)
            _ = glibcMallopt(mmapThreshold, 32 << 20)
            _ = glibcMallopt(trimThreshold, 512 << 20)
        #endif
        return true
    }()

    /// Sets the allocator up for reuse, once per process.
    public static func enable() { _ = enabled }
}
