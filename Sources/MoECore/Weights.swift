/// How a parameter starts life when it is not read from a checkpoint.
public enum Initializer: Sendable {
    case normal(std: Float)
    case constant(Float)
}

/// Where a model's parameters come from. Layers and routers ask for each tensor by name and
/// shape once; a checkpoint answers with the stored tensor (checking the shape), a seeded
/// generator answers with a fresh initialisation. One construction path serves both.
public protocol WeightSource {
    mutating func tensor(_ name: String, shape: [Int], initializer: Initializer) throws -> Tensor
}

/// Fresh parameters from a seeded generator: same seed, same model.
public struct RandomWeights: WeightSource {
    public var generator: SeededGenerator
    public init(seed: UInt64) { generator = SeededGenerator(seed: seed) }

    public mutating func tensor(_ name: String, shape: [Int], initializer: Initializer) throws -> Tensor {
        switch initializer {
        case .normal(let std): return Tensor(randomNormal: shape, std: std, using: &generator)
        case .constant(let value): return Tensor(repeating: value, shape: shape)
        }
    }
}

extension SafeTensorsFile: WeightSource {
    public func tensor(_ name: String, shape: [Int], initializer: Initializer) throws -> Tensor {
        try tensor(name, shape: shape)
    }
}

/// A fully connected layer without bias, y = x Wᵀ, with W stored [out × in] as PyTorch and
/// safetensors files have it; the product reads Wᵀ in place (a strided operand), so no
/// transposed copy is kept.
public struct Linear: Sendable {
    public var weight: Tensor
    /// The weight's checkpoint name: what loading, saving and the training tape call it.
    public let name: String
    public var inFeatures: Int { weight.cols }
    public var outFeatures: Int { weight.rows }

    /// `name` is empty for a product of a weight held elsewhere (a router's, by name).
    public init(weight: Tensor, name: String = "") {
        precondition(weight.shape.count == 2)
        self.weight = weight
        self.name = name
    }

    public init(
        _ name: String, in inFeatures: Int, out outFeatures: Int, std: Float,
        from source: inout some WeightSource
    ) throws {
        self.init(weight: try source.tensor(name, shape: [outFeatures, inFeatures], initializer: .normal(std: std)), name: name)
    }

    /// x: [T × in] → [T × out]; a large product splits over `threads` cores.
    public func callAsFunction(_ x: Tensor, threads: Int = Kernels.threads) -> Tensor {
        precondition(x.cols == inFeatures, "Linear expects \(inFeatures) inputs, got \(x.cols)")
        var y = Tensor(uninitialized: [x.rows, outFeatures])
        Tensor.product(x, transposed: false, weight, transposed: true, into: &y, accumulate: false, threads: threads)
        return y
    }
}

/// Parameters held in memory by checkpoint name (the trainer's copy), checked for shape.
public struct NamedTensors: WeightSource {
    public var tensors: [String: Tensor]
    public init(_ tensors: [String: Tensor]) { self.tensors = tensors }

    public func tensor(_ name: String, shape: [Int], initializer: Initializer) throws -> Tensor {
        guard let found = tensors[name] else { throw CheckpointError.missingTensor(path: "parameters", tensor: name) }
        guard found.shape == shape else {
            throw CheckpointError.wrongShape(path: "parameters", tensor: name, expected: shape, found: found.shape)
        }
        return found
    }
}
