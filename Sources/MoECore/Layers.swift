#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// RMSNorm: y = x / √(mean(x²) + ε) ⊙ g.
public struct RMSNorm: Sendable, ParameterDeclaring {
    public var gain: Parameter
    public let epsilon: Float

    /// Declares the gain `name` of `size`, ones when not loaded.
    public init(_ name: String, size: Int, epsilon: Float) {
        self.init(gain: Parameter(name, shape: [size], initializer: .constant(1)), epsilon: epsilon)
    }

    public init(gain: Parameter, epsilon: Float) { (self.gain, self.epsilon) = (gain, epsilon) }

    public mutating func visitParameters(_ visit: (inout Parameter) throws -> Void) rethrows { try visit(&gain) }

    /// Normalises every run of `gain.count` values: each row, or, with a gain narrower than
    /// the row, each head of it (Qwen3-MoE's per-head q/k norm).
    public func callAsFunction(_ x: Tensor) -> Tensor {
        var y = Tensor(uninitialized: x.shape)
        x.scalars.withUnsafeBufferPointer { xp in
            gain.value.scalars.withUnsafeBufferPointer { gp in
                y.scalars.withUnsafeMutableBufferPointer { yp in
                    Kernels.rmsNorm(
                        xp.baseAddress!, gain: gp.baseAddress!, yp.baseAddress!,
                        rows: x.count / gain.value.count, cols: gain.value.count, eps: epsilon)
                }
            }
        }
        return y
    }

    /// The same normalisation on the tape, for training.
    public func callAsFunction(_ x: Variable, on tape: Tape, parameter: (Parameter) -> Variable) -> Variable {
        tape.rmsNorm(x, gain: parameter(gain), epsilon: epsilon)
    }
}

/// Rotary position embedding (RoPE), in the "rotate half" layout of Llama and Mixtral:
/// dimension i pairs with i + D/2, rotated by angle pos · θ^(−2i/D).
public struct RotaryEmbedding: Sendable {
    let cosines: [Float]  // [context × D/2]
    let sines: [Float]
    let halfDim: Int
    /// Positions the tables hold.
    public var positions: Int { halfDim == 0 ? Int.max : cosines.count / halfDim }

    public init(headDim: Int, context: Int, theta: Float) {
        self.init(inverseFrequencies: (0..<headDim / 2).map { pow(Double(theta), -2 * Double($0) / Double(headDim)) }, context: context)
    }

    /// Tables for given per-pair frequencies (YaRN and other scaled RoPEs compute their own),
    /// with cos and sin multiplied by `scale` (YaRN's attention factor).
    public init(inverseFrequencies: [Double], context: Int, scale: Double = 1) {
        halfDim = inverseFrequencies.count
        var c = [Float]()
        var s = [Float]()
        c.reserveCapacity(context * halfDim)
        s.reserveCapacity(context * halfDim)
        for position in 0..<context {
            for frequency in inverseFrequencies {
                let angle = Double(position) * frequency
                c.append(Float(cos(angle) * scale))
                s.append(Float(sin(angle) * scale))
            }
        }
        cosines = c
        sines = s
    }

    /// Rotates `x` (one head's rotary part, 2 × halfDim values laid out in interleaved pairs
    /// (x0, x1), (x2, x3)…, as DeepSeek stores them) in place for `position`: pair i turns by
    /// the same angle as dimension i of the rotate-half layout.
    public func applyInterleaved(_ x: UnsafeMutablePointer<Float>, position: Int) {
        let base = position * halfDim
        for i in 0..<halfDim {
            let a = x[2 * i]
            let b = x[2 * i + 1]
            let c = cosines[base + i]
            let s = sines[base + i]
            x[2 * i] = a * c - b * s
            x[2 * i + 1] = b * c + a * s
        }
    }

    /// Rotates every head of row `x` (numHeads × headDim values) in place for `position`;
    /// `inverse` rotates by the opposite angle (the transpose, used by the backward pass).
    public func apply(_ x: UnsafeMutablePointer<Float>, numHeads: Int, position: Int, inverse: Bool = false) {
        let base = position * halfDim
        // 16 pairs at a time where the half fits whole vectors (moescope's heads: D = 32), with
        // the same products and differences, so the same bits.
        if halfDim % Kernels.width == 0 {
            return cosines.withUnsafeBufferPointer { cp in
                sines.withUnsafeBufferPointer { sp in
                    for h in 0..<numHeads {
                        let head = x + h * 2 * halfDim
                        var i = 0
                        while i < halfDim {
                            let a = Kernels.load(head + i)
                            let b = Kernels.load(head + i + halfDim)
                            let c = Kernels.load(cp.baseAddress! + base + i)
                            let sine = Kernels.load(sp.baseAddress! + base + i)
                            // A sign flip, as the scalar negation (SIMD's prefix − is 0 − x, +0 for 0).
                            let s =
                                inverse
                                ? unsafeBitCast(unsafeBitCast(sine, to: SIMD16<UInt32>.self) ^ 0x8000_0000, to: Kernels.Vector.self) : sine
                            Kernels.store(a * c - b * s, head + i)
                            Kernels.store(b * c + a * s, head + i + halfDim)
                            i += Kernels.width
                        }
                    }
                }
            }
        }
        for h in 0..<numHeads {
            let head = x + h * 2 * halfDim
            for i in 0..<halfDim {
                let a = head[i]
                let b = head[i + halfDim]
                let c = cosines[base + i]
                let s = inverse ? -sines[base + i] : sines[base + i]
                head[i] = a * c - b * s
                head[i + halfDim] = b * c + a * s
            }
        }
    }
}
