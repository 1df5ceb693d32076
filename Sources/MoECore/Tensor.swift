/// A dense, row-major block of `Float`s with a shape. Every weight, activation and gradient
/// in moescope is one of these; matrix maths goes through `Kernels`, never element loops here.
public struct Tensor: Sendable, Equatable {
    public var shape: [Int]
    public var scalars: [Float]

    public init(shape: [Int], scalars: [Float]) {
        precondition(
            shape.reduce(1, *) == scalars.count,
            "tensor of shape \(shape) needs \(shape.reduce(1, *)) scalars, got \(scalars.count)")
        self.shape = shape
        self.scalars = scalars
    }

    public init(zeros shape: [Int]) {
        self.init(shape: shape, scalars: [Float](repeating: 0, count: shape.reduce(1, *)))
    }

    /// A tensor whose every scalar the caller overwrites before reading (a product's output):
    /// skips zeroing megabytes that are about to be written anyway.
    public init(uninitialized shape: [Int]) {
        let count = shape.reduce(1, *)
        self.init(shape: shape, scalars: [Float](unsafeUninitializedCapacity: count) { _, initialized in initialized = count })
    }

    public init(repeating value: Float, shape: [Int]) {
        self.init(shape: shape, scalars: [Float](repeating: value, count: shape.reduce(1, *)))
    }

    /// Scalars drawn from N(0, std²) with a seeded generator.
    public init(randomNormal shape: [Int], std: Float, using rng: inout SeededGenerator) {
        let count = shape.reduce(1, *)
        self.init(shape: shape, scalars: (0..<count).map { _ in rng.nextNormal() * std })
    }

    public var count: Int { scalars.count }
    /// Rows of a 2-D tensor (or the product of all leading dimensions).
    public var rows: Int { shape.count <= 1 ? 1 : shape.dropLast().reduce(1, *) }
    /// Length of the last dimension.
    public var cols: Int { shape.last ?? 1 }

    public func row(_ i: Int) -> ArraySlice<Float> { scalars[i * cols..<(i + 1) * cols] }

    /// Elementwise map.
    public func mapped(_ transform: (Float) -> Float) -> Tensor {
        Tensor(shape: shape, scalars: scalars.map(transform))
    }

    /// Elementwise combination with a tensor of the same shape.
    func zipped(_ other: Tensor, _ combine: (Float, Float) -> Float) -> Tensor {
        Tensor(shape: shape, scalars: zip(scalars, other.scalars).map(combine))
    }
}

/// SplitMix64: small, fast and fully reproducible across platforms, so the same seed gives the
/// same model and the same training run everywhere.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64
    private var spareNormal: Float?

    public init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    public mutating func nextUniform() -> Float { Float(next() >> 40) * 0x1p-24 }

    /// Standard normal (Box–Muller; the second value is kept for the next call).
    public mutating func nextNormal() -> Float {
        if let spare = spareNormal {
            spareNormal = nil
            return spare
        }
        let u1 = max(nextUniform(), 1e-7)
        let u2 = nextUniform()
        let radius = (-2 * logf(u1)).squareRoot()
        spareNormal = radius * sinf(2 * .pi * u2)
        return radius * cosf(2 * .pi * u2)
    }
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
