#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import MoECore

/// Learning rate: linear warm-up to `peak`, then a cosine decay to `peak · floorRatio` at the
/// last step (the schedule of most small-LM recipes, llm.c's included).
public struct LearningRateSchedule: Sendable, Equatable {
    public var peak: Float
    public var warmupSteps: Int
    public var totalSteps: Int
    public var floorRatio: Float

    public init(peak: Float, warmupSteps: Int, totalSteps: Int, floorRatio: Float = 0.1) {
        self.peak = peak; self.warmupSteps = warmupSteps; self.totalSteps = totalSteps; self.floorRatio = floorRatio
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

/// AdamW (Loshchilov & Hutter): Adam moments with bias correction, and weight decay applied to
/// the weights directly rather than through the gradient. Norm gains and biases (1-D tensors)
/// are not decayed.
public struct AdamW: Sendable {
    public var beta1: Float = 0.9
    public var beta2: Float = 0.95
    public var epsilon: Float = 1e-8
    public var weightDecay: Float
    /// First and second moments by parameter name.
    public var firstMoment: [String: Tensor] = [:]
    public var secondMoment: [String: Tensor] = [:]
    /// Updates applied so far (for bias correction).
    public var updates = 0

    public init(weightDecay: Float) { self.weightDecay = weightDecay }

    /// One update of every parameter in `parameters` from `gradients` (same names), each
    /// gradient multiplied by `gradientScale` first (clipping). Parameters are independent, so
    /// they are spread over `threads` cores; each is updated exactly as on one.
    public mutating func update(_ parameters: inout [String: Tensor], gradients: [String: Tensor], learningRate lr: Float,
                                gradientScale: Float = 1, threads: Int = Kernels.threads) {
        updates += 1
        let correction1 = 1 - powf(beta1, Float(updates)), correction2 = 1 - powf(beta2, Float(updates))
        let names = parameters.keys.sorted().filter { gradients[$0] != nil }
        var states = names.map { name -> (Tensor, Tensor, Tensor) in
            let p = parameters.removeValue(forKey: name)!
            return (p, firstMoment.removeValue(forKey: name) ?? Tensor(zeros: p.shape),
                    secondMoment.removeValue(forKey: name) ?? Tensor(zeros: p.shape))
        }
        let (b1, b2, eps, decayRate) = (beta1, beta2, epsilon, weightDecay)
        states.withUnsafeMutableBufferPointer { slots in
            Kernels.parallelFor(names.count, threads: threads) { index in
                let g = gradients[names[index]]!
                var (p, m, v) = slots[index]
                slots[index] = (Tensor(zeros: []), Tensor(zeros: []), Tensor(zeros: []))   // keep p, m, v uniquely referenced
                let decay = p.shape.count >= 2 ? 1 - lr * decayRate : 1
                p.scalars.withUnsafeMutableBufferPointer { pp in m.scalars.withUnsafeMutableBufferPointer { mp in
                    v.scalars.withUnsafeMutableBufferPointer { vp in g.scalars.withUnsafeBufferPointer { gp in
                        for i in 0..<pp.count {
                            let gi = gp[i] * gradientScale
                            mp[i] = b1 * mp[i] + (1 - b1) * gi
                            vp[i] = b2 * vp[i] + (1 - b2) * gi * gi
                            let step = (mp[i] / correction1) / ((vp[i] / correction2).squareRoot() + eps)
                            pp[i] = pp[i] * decay - lr * step
                        }
                    } }
                } }
                slots[index] = (p, m, v)
            }
        }
        for (name, (p, m, v)) in zip(names, states) { parameters[name] = p; firstMoment[name] = m; secondMoment[name] = v }
    }
}

/// Global L2 norm of all gradients, summed in name order in Double so it is reproducible.
public func globalNorm(_ gradients: [String: Tensor]) -> Float {
    var total: Double = 0
    for name in gradients.keys.sorted() {
        total += gradients[name]!.scalars.withUnsafeBufferPointer { Double(Kernels.sumOfSquares($0.baseAddress!, count: $0.count)) }
    }
    return Float(total.squareRoot())
}
