/// y = x Wᵀ (+ b) for a weight matrix however it is held: moescope's own F32 `Linear`, or a
/// Hugging Face checkpoint's `MappedLinear`, read in its stored dtype. The blocks
/// (`GroupedQueryAttention`, `MultiHeadLatentAttention`, `SwiGLU`, `SparseMoE`) are written once over
/// this protocol, so both kinds of model are assembled from the same code.
public protocol Projection: Sendable {
    var inFeatures: Int { get }
    var outFeatures: Int { get }
    /// Several products at once (q, k and v; the gate and up projections of every chosen
    /// expert), their rows split over `threads` cores together. Each output is what the
    /// product alone would give.
    static func apply(_ products: [(projection: Self, input: Tensor)], threads: Int) -> [Tensor]
    /// MLPs `which` of `mlps` (the experts a batch was routed to), mlps[which[i]] on inputs[i]:
    /// what `SwiGLU` gives each alone.
    static func applyMLPs(_ mlps: [SwiGLU<Self>], _ which: [Int], on inputs: [Tensor], threads: Int) -> [Tensor]
}

extension Projection {
    /// All the gate and up projections in one split over the threads, then all the down
    /// projections in another.
    public static func applyMLPs(_ mlps: [SwiGLU<Self>], _ which: [Int], on inputs: [Tensor], threads: Int) -> [Tensor] {
        applyMLPsInTwoSplits(mlps, which, on: inputs, threads: threads)
    }

    static func applyMLPsInTwoSplits(_ mlps: [SwiGLU<Self>], _ which: [Int], on inputs: [Tensor], threads: Int) -> [Tensor] {
        var products: [(projection: Self, input: Tensor)] = []
        products.reserveCapacity(2 * which.count)
        for (i, m) in which.enumerated() {
            products.append((mlps[m].gate, inputs[i]))
            products.append((mlps[m].up, inputs[i]))
        }
        let projected = apply(products, threads: threads)
        return apply(
            which.enumerated().map { i, m in (mlps[m].down, Kernels.swiglu(gate: projected[2 * i], up: projected[2 * i + 1])) },
            threads: threads)
    }
}

extension Linear: Projection {
    /// One product after another, each split over `threads` cores by the GEMM; a decoded
    /// token's few rows all in one split between two threads (`Kernels.multiplyRows`).
    public static func apply(_ products: [(projection: Linear, input: Tensor)], threads: Int) -> [Tensor] {
        guard threads > 1, products.count > 1, products.allSatisfy({ $0.input.rows < Kernels.microRows }) else {
            return products.map { $0.projection($0.input, threads: threads) }
        }
        // One buffer holds every input and output while the threads run, so their addresses
        // stay valid for the whole call. Products are read in place by index (a copy of a
        // `Linear` retains its parameter's five references: tens of them a token).
        let inputCount = products.reduce(0) { $0 + $1.input.count }
        let outputCount = products.reduce(0) { $0 + $1.input.rows * $1.projection.outFeatures }
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: inputCount + outputCount)
        defer { buffer.deallocate() }
        var jobs: [Kernels.RowProduct] = []
        jobs.reserveCapacity(products.count)
        var (inputAt, outputAt) = (0, inputCount)
        for i in products.indices {
            let (rows, inputs, outputs) = (products[i].input.rows, products[i].projection.inFeatures, products[i].projection.outFeatures)
            precondition(products[i].input.cols == inputs, "Linear expects \(inputs) inputs, got \(products[i].input.cols)")
            products[i].input.withBase { (buffer + inputAt).update(from: $0, count: rows * inputs) }
            jobs.append(
                .init(weights: products[i].projection.weight.rowsPacked, input: buffer + inputAt, rows: rows, output: buffer + outputAt))
            inputAt += rows * inputs
            outputAt += rows * outputs
        }
        Kernels.multiplyRows(jobs, threads: threads)
        return jobs.map { job in
            Tensor(
                shape: [job.rows, job.weights.outputs],
                scalars: Array(UnsafeBufferPointer(start: job.output, count: job.rows * job.weights.outputs)))
        }
    }

    /// A decoded token's experts (few rows each) with each MLP run whole on one of two threads
    /// (`Kernels.multiplyMLPs`): one hand-off instead of two. Otherwise the two splits.
    public static func applyMLPs(_ mlps: [SwiGLU<Linear>], _ which: [Int], on inputs: [Tensor], threads: Int) -> [Tensor] {
        guard threads > 1, which.count > 1, inputs.allSatisfy({ $0.rows < Kernels.microRows }) else {
            return applyMLPsInTwoSplits(mlps, which, on: inputs, threads: threads)
        }
        precondition(which.allSatisfy(mlps.indices.contains), "expert index outside 0..<\(mlps.count)")  // read unchecked below
        let packed = mlps.withUnsafeBufferPointer { mlps in which.map { SwiGLU.packedRows(of: mlps, at: $0) } }
        // Per MLP: its input rows, 3 × rows × hidden of scratch, its output rows; one buffer.
        var floats = 0
        for (i, mlp) in packed.enumerated() {
            precondition(inputs[i].cols == mlp.gate.inputs, "SwiGLU expects \(mlp.gate.inputs) inputs, got \(inputs[i].cols)")
            floats += inputs[i].rows * (mlp.gate.inputs + 3 * mlp.gate.outputs + mlp.down.outputs)
        }
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: floats)
        defer { buffer.deallocate() }
        var outputs: [(at: UnsafeMutablePointer<Float>, rows: Int, cols: Int)] = []
        outputs.reserveCapacity(which.count)
        let runs = UnsafeMutableBufferPointer<Kernels.MLPRows>.allocate(capacity: which.count)
        defer { runs.deallocate() }
        var at = buffer
        for (i, mlp) in packed.enumerated() {
            let rows = inputs[i].rows
            let (x, scratch) = (at, at + rows * mlp.gate.inputs)
            let y = scratch + 3 * rows * mlp.gate.outputs
            inputs[i].withBase { x.update(from: $0, count: rows * mlp.gate.inputs) }
            (runs.baseAddress! + i).initialize(
                to: Kernels.MLPRows(gate: mlp.gate, up: mlp.up, down: mlp.down, input: x, rows: rows, scratch: scratch, output: y))
            outputs.append((y, rows, mlp.down.outputs))
            at = y + rows * mlp.down.outputs
        }
        // `MLPRows` reads the packed copies through raw pointers: held until the products end.
        withExtendedLifetime(packed) { Kernels.multiplyMLPs(UnsafeBufferPointer(runs), threads: threads) }
        return outputs.map {
            Tensor(shape: [$0.rows, $0.cols], scalars: Array(UnsafeBufferPointer(start: $0.at, count: $0.rows * $0.cols)))
        }
    }
}

extension SwiGLU<Linear> {
    /// The gate, up and down packed copies (`Parameter.rowsPacked`) of `mlps[index]`, read in
    /// place: through the parameters' stored caches when built, as a decoded token finds them.
    /// Asked of `mlps[index].gate.weight` directly, the compiler copied each `Parameter` first
    /// (five retains, cache misses on a many-expert model's scattered objects): a tenth of a
    /// 256-expert, 61-layer model's decode.
    static func packedRows(
        of mlps: UnsafeBufferPointer<Self>, at index: Int
    ) -> (gate: Kernels.PackedRows, up: Kernels.PackedRows, down: Kernels.PackedRows) {
        let built = (
            mlps[index].gate.weight.packedRowsCache.ifBuilt, mlps[index].up.weight.packedRowsCache.ifBuilt,
            mlps[index].down.weight.packedRowsCache.ifBuilt
        )
        if let gate = built.0, let up = built.1, let down = built.2 { return (gate, up, down) }
        return (mlps[index].gate.weight.rowsPacked, mlps[index].up.weight.rowsPacked, mlps[index].down.weight.rowsPacked)
    }
}

/// A linear layer whose weight stays in the mapped file (F32, F16 or BF16), applied by
/// `Kernels.multiply` (a decoded token's products convert in registers; long prompts decode
/// blocks of rows for the packed GEMM), so no layer is ever held whole as Floats.
public struct MappedLinear: Projection {
    public let weight: MappedTensor
    public let bias: Tensor?

    public init(weight: MappedTensor, bias: Tensor?) { (self.weight, self.bias) = (weight, bias) }

    public var inFeatures: Int { weight.columns }
    public var outFeatures: Int { weight.rows }

    public func callAsFunction(_ x: Tensor, threads: Int) -> Tensor {
        Self.apply([(self, x)], threads: threads)[0]
    }

    /// One wake-up of the threads serves every product. Bit-identical for any thread count.
    public static func apply(_ products: [(projection: MappedLinear, input: Tensor)], threads: Int) -> [Tensor] {
        var outputs = products.map { Tensor(uninitialized: [$0.input.rows, $0.projection.outFeatures]) }
        // Products given the same tensor (q, k and v; an expert's gate and up) share one copy of
        // it, so `Kernels.multiply` also lays it out once.
        let storage = products.map { $0.input.scalars.withUnsafeBufferPointer { $0.baseAddress } }
        let firstWithInput = storage.indices.map { i in
            storage.indices.first { storage[$0] == storage[i] && products[$0].input.count == products[i].input.count }!
        }
        let inputCount = products.indices.reduce(0) { $0 + (firstWithInput[$1] == $1 ? products[$1].input.count : 0) }
        let outputCount = outputs.reduce(0) { $0 + $1.count }
        // One buffer holds every input and output while the threads run, so their addresses
        // stay valid for the whole call.
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: max(1, inputCount + outputCount))
        defer { buffer.deallocate() }
        var jobs: [WeightProduct] = []
        var inputAt = 0
        var outputAt = inputCount
        for (i, (linear, input)) in products.enumerated() {
            precondition(input.cols == linear.inFeatures, "\(linear.weight.name) expects \(linear.inFeatures) inputs, got \(input.cols)")
            let copy: UnsafeMutablePointer<Float>
            if firstWithInput[i] == i {
                copy = buffer + inputAt
                input.scalars.withUnsafeBufferPointer { copy.update(from: $0.baseAddress!, count: $0.count) }
                inputAt += input.count
            } else {
                copy = UnsafeMutablePointer(mutating: jobs[firstWithInput[i]].input)
            }
            jobs.append(WeightProduct(weight: linear.weight.stored, input: copy, output: buffer + outputAt, count: input.rows))
            outputAt += input.rows * linear.outFeatures
        }
        Kernels.multiply(jobs, threads: threads)
        for (i, (linear, _)) in products.enumerated() {
            outputs[i].scalars.withUnsafeMutableBufferPointer { op in
                op.baseAddress!.update(from: jobs[i].output, count: op.count)
                if let bias = linear.bias {
                    let n = linear.outFeatures
                    for r in 0..<op.count / max(1, n) { for j in 0..<n { op[r * n + j] += bias.scalars[j] } }
                }
            }
        }
        return outputs
    }

    /// Bytes of weights one input row reads.
    public var byteCount: Int { weight.stored.byteCount }
}
