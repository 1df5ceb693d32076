extension Kernels.PackedRows {
    /// y = x Wᵀ for one input row, every output bit for bit what `multiply` (and so `dot`) gives,
    /// four panels (64 outputs) side by side (`FourPanelRun`).
    func multiplyFourPanels(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>) {
        Kernels.FourPanelRun(weights: self, input: x, output: y, panels: 0..<panelCount).run()
    }
}

extension Kernels {
    /// One input row times the panels `panels` of a `PackedRows`, as plain pointers and counts
    /// (as `PanelRun`), every output bit for bit `dot`'s.
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
        let storage: UnsafePointer<Float>
        let inputs, outputs: Int
        let input: UnsafePointer<Float>
        let output: UnsafeMutablePointer<Float>
        let panels: Range<Int>
        /// The panels past the last group of four, if any.
        let leftover: PanelRun?

        init(weights: PackedRows, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, panels: Range<Int>) {
            (storage, inputs, outputs) = (UnsafePointer(weights.storage), weights.inputs, weights.outputs)
            (self.input, self.output, self.panels) = (input, output, panels)
            let grouped = panels.lowerBound + panels.count / 4 * 4
            leftover =
                grouped < panels.upperBound
                ? PanelRun(weights: weights, input: input, output: output, panels: grouped..<panels.upperBound) : nil
        }

        func run() {
            let (x, y, k, width, panel) = (input, output, inputs, Kernels.width, PackedRows.panel)
            let stride = panel * k  // floats from one panel to the next
            let chunks = k / width
            let (evens, odds) = ((chunks + 1) / 2, chunks / 2)
            for group in 0..<panels.count / 4 {
                let first = panels.lowerBound + 4 * group  // the group's first panel
                let w0 = storage + first * stride
                let (w1, w2, w3) = (w0 + stride, w0 + 2 * stride, w0 + 3 * stride)
                // The lane sums start from −0, which adds nothing to any value (+0 included): the
                // same as starting from lane 0 itself, as `dot`'s sum does. Without a full chunk,
                // `dot` adds the tail to +0.
                var t0 = Vector(repeating: chunks > 0 ? -0.0 : 0)
                var t1 = t0
                var t2 = t0
                var t3 = t0
                var step = 0  // floats into each panel, read in `readingOrder`
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
                            step &+= width
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
                    step += width
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
            leftover?.run()
        }
    }
}
