extension Kernels {
    /// A weight W [n × k] with Wᵀ packed once in the GEMM's panels (`PackedB`), for every
    /// product of many rows that reads it (y = x Wᵀ: an expert's batch of rows, a batch's
    /// projections). Packing Wᵀ on every product was about a tenth of the products' time in a
    /// long text's analysis; each entry is the same FMA chain either way (`PackedB`).
    /// Immutable after init; the memory is freed with the last reference.
    final class PackedPanels: @unchecked Sendable {
        let packed: PackedB

        init(_ weight: Tensor) {
            let (n, k) = (weight.rows, weight.cols)
            packed = weight.scalars.withUnsafeBufferPointer {
                Kernels.PackedB(Operand($0.baseAddress!, leadingDimension: k).transposed, k: k, n: n)
            }
        }

        deinit { packed.deallocate() }
    }
}
