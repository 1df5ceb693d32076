extension Kernels {
    /// `causalAttention` for fewer than `microRows` query rows (decoding one token against a KV
    /// cache): the same softmax (`causalSoftmax`) and value product, with each score q·k summed for speed rather
    /// than in `dot`'s order. `dot` adds its 16 lanes one after another, 15 dependent additions
    /// per score, which made the scores of a decoded token's attention a tenth of its time; here
    /// the lanes are added pairwise (16 → 8 → 4 → 2 → 1). The scores differ from the full
    /// pass's by rounding only (decoding already sums them in another order than the packed
    /// product of a full pass does; `ModelTests` and `HubParityTests` hold the two together).
    static func fewRowAttention(
        count: Int, offset: Int, queries: Operand, keys: Operand, values: Operand,
        dims: Int, valueDims: Int, scale: Float, scores: UnsafeMutablePointer<Float>,
        into out: UnsafeMutablePointer<Float>, ldo: Int
    ) {
        precondition(count < microRows && queries.columnStride == 1 && keys.columnStride == 1)
        let length = offset + count
        for i in 0..<count {
            let q = queries.base + i * queries.rowStride
            let row = scores + i * length
            let visible = offset + i + 1
            for j in 0..<visible { row[j] = pairwiseDot(q, keys.base + j * keys.rowStride, count: dims) }
            causalSoftmax(row, count: visible, length: length, scale: scale)
        }
        // Probabilities times values: `gemm`'s few-rows path, as `causalAttention` runs it.
        gemm(
            m: count, n: valueDims, k: length, Operand(UnsafePointer(scores), leadingDimension: length), values, out, ldc: ldo,
            threads: 1)
    }

    /// x·y over `n` floats, 16 lanes at a time, the lanes then added pairwise.
    @inline(__always) static func pairwiseDot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, count n: Int) -> Float {
        var sum = Vector()
        var i = 0
        while i + width <= n {
            sum.addProduct(load(x + i), load(y + i))
            i += width
        }
        let eight = sum.lowHalf + sum.highHalf
        let four = eight.lowHalf + eight.highHalf
        let two = four.lowHalf + four.highHalf
        var total = two[0] + two[1]
        while i < n {
            total += x[i] * y[i]
            i += 1
        }
        return total
    }
}
