extension Kernels {
    /// A weight [outputs × inputs] packed for `FourPanelRun`: `PackedRows`' panels (16 outputs
    /// each, inputs in `readingOrder`), with each group of four panels interleaved step by step
    /// (the four panels' 16 floats of a step side by side), so a group is one sequential read
    /// rather than four streams a panel apart; the panels past the last whole group follow in
    /// `PackedRows`' layout, at the offset they have there.
    public final class FourPanelRows: @unchecked Sendable {
        public let outputs: Int
        public let inputs: Int
        let storage: UnsafeMutablePointer<Float>
        var panelCount: Int { (outputs + PackedRows.panel - 1) / PackedRows.panel }

        public init(_ weight: Tensor) {
            let packed = PackedRows(weight)
            (outputs, inputs) = (packed.outputs, packed.inputs)
            let (k, panel) = (inputs, PackedRows.panel)
            let stride = panel * k
            let count = max(1, packed.panelCount * stride)
            storage = Kernels.allocateLineAligned(count)
            let grouped = packed.panelCount / 4 * 4
            for group in 0..<grouped / 4 {
                let to = storage + 4 * group * stride
                for step in 0..<k {
                    for i in 0..<4 {
                        (to + 4 * panel * step + panel * i).update(
                            from: packed.storage + (4 * group + i) * stride + panel * step, count: panel)
                    }
                }
            }
            let rest = count - grouped * stride
            (storage + grouped * stride).update(from: packed.storage + grouped * stride, count: rest)
        }

        deinit { storage.deallocate() }

        /// y = x Wᵀ for one input row, every output bit for bit what `PackedRows.multiply` (and
        /// so `dot`) gives, four panels (64 outputs) side by side (`FourPanelRun`).
        func multiply(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>) {
            FourPanelRun(weights: self, input: x, output: y).run()
        }
    }
}

extension Kernels {
    /// One input row times every panel of a `FourPanelRows`, as plain pointers and counts (as
    /// `PanelRun`), every output bit for bit `dot`'s.
    ///
    /// `PanelRun` builds a panel's 16 lane sums as one chain (lane l's even and odd chunk
    /// products, then `total + (even + odd)`, sixteen times over): with a weight that sits in
    /// cache, as a router's do (4–48 KB, read once per layer), little else is in flight and the
    /// core waits on each add. Here four panels run those chains side by side, from one
    /// broadcast of each input value, so eight FMA chains and four lane sums overlap (the GRU
    /// router's six layers in a loop, weights in cache: 14.0 → 11.4 µs a token). Each output
    /// still sees the same operations in the same order. Panels past the last whole group of
    /// four run one at a time (`PanelRun`).
    struct FourPanelRun {
        /// Every panel of the weight: the groups of four interleaved (`FourPanelRows`), the
        /// panels past the last whole group in `PackedRows`' layout, which `PanelRun` reads.
        let all: PanelRun

        init(weights: FourPanelRows, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>) {
            all = PanelRun(
                storage: weights.storage, inputs: weights.inputs, outputs: weights.outputs, input: input, output: output,
                panels: 0..<weights.panelCount)
        }

        func run() {
            let (storage, x, y, k, outputs) = (all.storage, all.input, all.output, all.inputs, all.outputs)
            let (width, panel) = (Kernels.width, PackedRows.panel)
            let stride = panel * k  // floats from one panel to the next
            let chunks = k / width
            let (evens, odds) = ((chunks + 1) / 2, chunks / 2)
            let groups = all.panels.count / 4
            for group in 0..<groups {
                let first = 4 * group  // the group's first panel
                let w0 = storage + first * stride  // the group's interleaved block (`FourPanelRows`)
                let (w1, w2, w3) = (w0 + panel, w0 + 2 * panel, w0 + 3 * panel)
                // The lane sums start from −0, which adds nothing to any value (+0 included): the
                // same as starting from lane 0 itself, as `dot`'s sum does. Without a full chunk,
                // `dot` adds the tail to +0.
                var t0 = Vector(repeating: chunks > 0 ? -0.0 : 0)
                var t1 = t0
                var t2 = t0
                var t3 = t0
                var step = 0  // floats into the group's block: four panels' 16 each a step
                if chunks > 0 {
                    // One chain of every other chunk's products, four panels side by side:
                    // `count` chunks from `first`, the panels read on from `step`.
                    @inline(__always) func chain(_ count: Int, from first: UnsafePointer<Float>) -> (Vector, Vector, Vector, Vector) {
                        var (a0, a1, a2, a3) = (Vector(), Vector(), Vector(), Vector())
                        var value = first
                        for _ in 0..<count {
                            let b = Vector(repeating: value.pointee)
                            a0.addProduct(b, load(w0 + step))
                            a1.addProduct(b, load(w1 + step))
                            a2.addProduct(b, load(w2 + step))
                            a3.addProduct(b, load(w3 + step))
                            step &+= 4 * width
                            value += 2 * width
                        }
                        return (a0, a1, a2, a3)
                    }
                    for lane in 0..<width {
                        let (e0, e1, e2, e3) = chain(evens, from: x + lane)
                        let (o0, o1, o2, o3) = chain(odds, from: x + width + lane)
                        t0 = t0 + (e0 + o0)
                        t1 = t1 + (e1 + o1)
                        t2 = t2 + (e2 + o2)
                        t3 = t3 + (e3 + o3)
                    }
                }
                // The tail as `dot` adds it: each product rounded, then added.
                for p in chunks * width..<k {
                    let b = Vector(repeating: x[p])
                    let p0 = b * load(w0 + step)
                    let p1 = b * load(w1 + step)
                    let p2 = b * load(w2 + step)
                    let p3 = b * load(w3 + step)
                    t0 = t0 + p0
                    t1 = t1 + p1
                    t2 = t2 + p2
                    t3 = t3 + p3
                    step += 4 * width
                }
                @inline(__always) func store(_ total: Vector, index: Int) {
                    let start = (first + index) * panel
                    let valid = min(panel, outputs - start)
                    if valid == panel {
                        Kernels.store(total, y + start)
                    } else {  // through memory: reading lanes of `total` had the compiler split its sums
                        withUnsafeTemporaryAllocation(of: Float.self, capacity: panel) { lanes in
                            Kernels.store(total, lanes.baseAddress!)
                            for j in 0..<valid { y[start + j] = lanes[j] }
                        }
                    }
                }
                store(t0, index: 0)
                store(t1, index: 1)
                store(t2, index: 2)
                store(t3, index: 3)
            }
            if 4 * groups < all.panels.count {
                PanelRun(storage: storage, inputs: k, outputs: outputs, input: x, output: y, panels: 4 * groups..<all.panels.count).run()
            }
        }
    }
}
