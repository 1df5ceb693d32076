import MoECore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Learning rate: linear warm-up to `peak`, then a cosine decay to `peak · floorRatio` at the
/// last step (the schedule of most small-LM recipes, llm.c's included).
public struct LearningRateSchedule: Sendable, Equatable {
    public var peak: Float
    public var warmupSteps: Int
    public var totalSteps: Int
    public var floorRatio: Float

    public init(peak: Float, warmupSteps: Int, totalSteps: Int, floorRatio: Float = 0.1) {
        self.peak = peak
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.floorRatio = floorRatio
    }

    /// The rate for 0-based `step`.
    public func rate(at step: Int) -> Float {
        if step < warmupSteps { return peak * Float(step + 1) / Float(warmupSteps) }
        let span = max(1, totalSteps - warmupSteps)
        let progress = min(1, Float(step - warmupSteps) / Float(span))
        let cosine = 0.5 * (1 + cosf(.pi * progress))
        return peak * (floorRatio + (1 - floorRatio) * cosine)
    }
}

/// The trainable parameters as one flat list, built once from the model's declaration
/// (`declaredParameters`): the gradients, both AdamW moments and the saved training state are
/// indexed alike, so a step neither sorts nor looks anything up by name. Sorted by checkpoint
/// name rather than in declaration order, because the gradient norm is summed in list order and
/// a run must keep reproducing the loss curve of the runs before it bit for bit.
public struct ParameterList: Sendable, Equatable {
    public let names: [String]
    public var tensors: [Tensor]
    /// Where in this list the parameter `visitParameters` walks k-th sits: the tape forward's
    /// leaves, which it takes in walk order, are `walkOrder.map { listLeaves[$0] }`.
    public let walkOrder: [Int]

    public init(_ declared: [Parameter]) {
        let sorted = declared.indices.sorted { declared[$0].name < declared[$1].name }
        names = sorted.map { declared[$0].name }
        tensors = sorted.map { declared[$0].value }
        var walkOrder = [Int](repeating: 0, count: declared.count)
        for (position, walked) in sorted.enumerated() { walkOrder[walked] = position }
        self.walkOrder = walkOrder
    }

    public var named: [String: Tensor] { Dictionary(uniqueKeysWithValues: zip(names, tensors)) }
}

/// AdamW (Loshchilov & Hutter): Adam moments with bias correction, and weight decay applied to
/// the weights directly rather than through the gradient. Norm gains and biases (1-D tensors)
/// are not decayed.
public struct AdamW: Sendable {
    public var beta1: Float = 0.9
    public var beta2: Float = 0.95
    public var epsilon: Float = 1e-8
    public var weightDecay: Float
    /// First and second moments, one per parameter of the list it updates (empty before the
    /// first update).
    public var firstMoment: [Tensor] = []
    public var secondMoment: [Tensor] = []
    /// Updates applied so far (for bias correction).
    public var updates = 0

    public init(weightDecay: Float) { self.weightDecay = weightDecay }

    /// One update of every parameter from its gradient (same positions), each gradient
    /// multiplied by `gradientScale` first (clipping). Parameters are independent, so they are
    /// spread over `threads` cores; each is updated exactly as on one.
    public mutating func update(
        _ parameters: inout [Tensor], gradients: [Tensor], learningRate lr: Float,
        gradientScale: Float = 1, threads: Int = Kernels.threads
    ) {
        precondition(gradients.count == parameters.count)
        updates += 1
        if firstMoment.isEmpty {
            firstMoment = parameters.map { Tensor(zeros: $0.shape) }
            secondMoment = firstMoment
        }
        let correction1 = 1 - powf(beta1, Float(updates))
        let correction2 = 1 - powf(beta2, Float(updates))
        let (b1, b2, eps, decayRate) = (beta1, beta2, epsilon, weightDecay)
        parameters.withUnsafeMutableBufferPointer { ps in
            firstMoment.withUnsafeMutableBufferPointer { ms in
                secondMoment.withUnsafeMutableBufferPointer { vs in
                    Kernels.parallelFor(ps.count, threads: threads) { index in
                        let g = gradients[index]
                        // Taken out of their slots while updated, so each stays uniquely referenced.
                        var (p, m, v) = (ps[index], ms[index], vs[index])
                        (ps[index], ms[index], vs[index]) = (Tensor(zeros: []), Tensor(zeros: []), Tensor(zeros: []))
                        let decay = p.shape.count >= 2 ? 1 - lr * decayRate : 1
                        p.scalars.withUnsafeMutableBufferPointer { pp in
                            m.scalars.withUnsafeMutableBufferPointer { mp in
                                v.scalars.withUnsafeMutableBufferPointer { vp in
                                    g.scalars.withUnsafeBufferPointer { gp in
                                        for i in 0..<pp.count {
                                            let gi = gp[i] * gradientScale
                                            mp[i] = b1 * mp[i] + (1 - b1) * gi
                                            vp[i] = b2 * vp[i] + (1 - b2) * gi * gi
                                            let step = (mp[i] / correction1) / ((vp[i] / correction2).squareRoot() + eps)
                                            pp[i] = pp[i] * decay - lr * step
                                        }
                                    }
                                }
                            }
                        }
                        (ps[index], ms[index], vs[index]) = (p, m, v)
                    }
                }
            }
        }
    }
}

/// Global L2 norm of all gradients, summed in list order in Double so it is reproducible.
public func globalNorm(_ gradients: [Tensor]) -> Float {
    var total: Double = 0
    for gradient in gradients {
        total += gradient.scalars.withUnsafeBufferPointer { Double(Kernels.sumOfSquares($0.baseAddress!, count: $0.count)) }
    }
    return Float(total.squareRoot())
}
