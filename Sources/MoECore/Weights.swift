import Synchronization

/// How a parameter starts life when it is not read from a checkpoint.
public enum Initializer: Sendable {
    case normal(std: Float)
    case constant(Float)
}

/// Where a model's parameters come from: a checkpoint answers with the stored tensor (checking
/// the shape), a seeded generator with a fresh initialisation. Loading asks for every declared
/// parameter in declaration order (`ParameterDeclaring.load(from:)`), so one path serves both.
public protocol WeightSource {
    mutating func tensor(_ name: String, shape: [Int], initializer: Initializer) throws -> Tensor
}

/// One parameter, declared once with its checkpoint name, its shape (that of `value`) and how
/// it starts. Its block reads `value`; loading, saving, `namedParameters`, the optimiser and the
/// trainer find it by walking the block's declaration (`ParameterDeclaring`), never by a name
/// written a second time.
public struct Parameter: Sendable {
    public let name: String
    public let initializer: Initializer
    /// The declared shape, `value`'s once loaded.
    public let shape: [Int]
    public var value: Tensor {
        // A new value makes a new (empty) packed copy; other copies of this parameter keep theirs.
        didSet { (packedRowsCache, packedPanelsCache) = (BuiltOnce(), BuiltOnce()) }
    }
    /// Inference's packed copy of a matrix parameter (`rowsPacked`), built on first use; read
    /// directly where a lookup must not copy the parameter (`SwiGLU.packedRows(of:at:)`).
    private(set) var packedRowsCache = BuiltOnce<Kernels.PackedRows>()
    /// Its copy for products of many rows (`panelsPackedOnReuse`), built on third use.
    private var packedPanelsCache = BuiltOnce<Kernels.PackedPanels>()
    /// Its place in the walk of the model that declared it (`numberParameters()`), −1 until
    /// numbered: a tape forward handed one leaf per parameter in walk order reads this one's
    /// at that index, so a training step looks nothing up by name.
    public internal(set) var declarationIndex = -1

    /// The value packed for products of one or a few input rows (`Kernels.PackedRows`): built
    /// the first time a decode asks for it, then kept as long as the value is not changed, so
    /// a decoded model holds each matrix it has used twice.
    public var rowsPacked: Kernels.PackedRows { packedRowsCache.value { Kernels.PackedRows(value) } }

    /// Wᵀ packed in the GEMM's panels for products of many rows (`Kernels.PackedPanels`), kept
    /// from the third such product on, while the value is not changed; nil before that, when
    /// the product packs its panels for itself. One pass of the explorer multiplies an expert
    /// twice (every expert for the norms, then the chosen ones), so the explorer's pass over a
    /// text holds no second copy of the weights, while a run of passes (analyze's windows, an
    /// edited text) packs each matrix once more and then reads the kept copy.
    var panelsPackedOnReuse: Kernels.PackedPanels? {
        packedPanelsCache.value(onAsk: Self.productsBeforePanelsKept + 1) { Kernels.PackedPanels(value) }
    }
    static let productsBeforePanelsKept = 2

    /// Frees the packed copies (every copy of this parameter shares them); the next product
    /// that needs one packs it again. For a model about to be replaced: the explorer's switch
    /// to another router, which would otherwise hold both models' copies at once. Only while
    /// no product reads this parameter: lookups read the copies without a lock (`BuiltOnce`).
    public func releasePackedCopies() {
        packedRowsCache.release()
        packedPanelsCache.release()
    }

    /// Declared: zeros of `shape` until `load(from:)` fills it.
    public init(_ name: String, shape: [Int], initializer: Initializer) {
        self.name = name
        self.initializer = initializer
        self.shape = shape
        value = Tensor(zeros: shape)
    }

    /// Declared to be read from a checkpoint, holding nothing until then: a config that implies
    /// sizes its files do not have allocates nothing before the shapes are checked.
    public init(reading name: String, shape: [Int]) {
        self.name = name
        initializer = .constant(0)
        self.shape = shape
        value = Tensor(zeros: [0])
    }

    /// A value already at hand (the tied LM head's embedding, a hand-built block).
    public init(_ name: String, value: Tensor) {
        self.name = name
        initializer = .constant(0)
        shape = value.shape
        self.value = value
    }

    /// Reads the declared name and shape from `source`: a missing or mis-shaped tensor throws
    /// one line naming it.
    public mutating func load(from source: inout some WeightSource) throws {
        value = try source.tensor(name, shape: shape, initializer: initializer)
    }
}

/// A block that declares its parameters as `Parameter` properties. `visitParameters` walks them
/// in declaration order, which is the order a seeded model draws them (so it fixes the weights
/// a seed gives), and everything that handles parameters is this one walk.
public protocol ParameterDeclaring {
    mutating func visitParameters(_ visit: (inout Parameter) throws -> Void) rethrows
}

extension ParameterDeclaring {
    /// Fills every declared parameter from `source`, in declaration order.
    public mutating func load(from source: inout some WeightSource) throws {
        try visitParameters { try $0.load(from: &source) }
    }

    /// Every parameter, in declaration order.
    public var declaredParameters: [Parameter] {
        var copy = self
        var all: [Parameter] = []
        copy.visitParameters { all.append($0) }
        return all
    }

    /// Every parameter by checkpoint name (what saving writes).
    public var namedParameters: [String: Tensor] {
        Dictionary(uniqueKeysWithValues: declaredParameters.map { ($0.name, $0.value) })
    }

    public var parameterCount: Int { declaredParameters.reduce(0) { $0 + $1.value.count } }

    /// Numbers every parameter by its place in the walk (`Parameter.declarationIndex`).
    mutating func numberParameters() {
        var next = 0
        visitParameters {
            $0.declarationIndex = next
            next += 1
        }
    }

    /// A tape leaf of every parameter's value, in walk order: the leaves a tape forward of
    /// this block, numbered, reads by `Parameter.declarationIndex`.
    public func leaves(on tape: Tape) -> [Variable] { declaredParameters.map { tape.leaf($0.value) } }
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
public struct Linear: Sendable, ParameterDeclaring {
    public var weight: Parameter
    public var inFeatures: Int { weight.value.cols }
    public var outFeatures: Int { weight.value.rows }

    /// A product of a weight held elsewhere (a router's, or the tied embedding), under `name`.
    public init(weight: Tensor, name: String = "") {
        precondition(weight.shape.count == 2)
        self.weight = Parameter(name, value: weight)
    }

    /// A product of a parameter declared elsewhere (the tied embedding), sharing its packed copy.
    public init(_ weight: Parameter) {
        precondition(weight.shape.count == 2)
        self.weight = weight
    }

    /// Declares `name`, [out × in], drawn from N(0, std²) when not loaded.
    public init(_ name: String, in inFeatures: Int, out outFeatures: Int, std: Float) {
        weight = Parameter(name, shape: [outFeatures, inFeatures], initializer: .normal(std: std))
    }

    public mutating func visitParameters(_ visit: (inout Parameter) throws -> Void) rethrows { try visit(&weight) }

    /// x: [T × in] → [T × out]; a large product splits over `threads` cores. A few rows (a
    /// decoded token) read the packed copy (`Parameter.rowsPacked`), which gives the same
    /// values as `gemm` does for them.
    public func callAsFunction(_ x: Tensor, threads: Int = Kernels.threads) -> Tensor {
        precondition(x.cols == inFeatures, "Linear expects \(inFeatures) inputs, got \(x.cols)")
        var y = Tensor(uninitialized: [x.rows, outFeatures])
        x.withBase { xp in y.withMutableBase { linear(xp, rows: x.rows, weight, into: $0, threads: threads) } }
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

/// A copy of a parameter's value in another layout (`Parameter.rowsPacked`, `panelsPackedOnReuse`),
/// built by the first product that asks and shared after it by every thread and every copy of
/// the `Parameter`, until one of them is assigned a new value (which starts a new one).
///
/// Once built it is read without a lock: a decoded token looks its packed copies up hundreds
/// of times (every chosen expert of every layer), and a lock's atomic read-modify-write orders
/// every memory access around it, so one lookup's cache misses could not overlap the next
/// one's (a 61-layer, 256-expert model decoded 1.8 → 1.5 ms a token without it). Building
/// takes the lock, so two threads asking at once build one copy.
final class BuiltOnce<Built: AnyObject & Sendable>: Sendable {
    /// The built copy's address, retained (`Unmanaged`), or 0 (an address as an integer, which
    /// is `Sendable` where a pointer is not).
    private let published = Atomic<Int>(0)
    /// Requests while nothing is built (`value(onAsk:)`), and the lock for building.
    private let asks = Mutex(0)

    deinit { Self.unmanaged(published.load(ordering: .acquiring))?.release() }

    private static func unmanaged(_ address: Int) -> Unmanaged<Built>? {
        UnsafeRawPointer(bitPattern: address).map { Unmanaged<Built>.fromOpaque($0) }
    }

    /// Drops what was built (a product holding it keeps its own reference until it ends) and
    /// starts the count of requests again. Only while no product is looking the copy up (the
    /// explorer releases the model it is leaving): a lookup reads without the lock.
    func release() {
        asks.withLock { asks in
            asks = 0
            Self.unmanaged(published.exchange(0, ordering: .acquiringAndReleasing))?.release()
        }
    }

    /// What was built, if anything has been yet (building nothing).
    var ifBuilt: Built? { Self.unmanaged(published.load(ordering: .acquiring))?.takeUnretainedValue() }

    func value(_ make: () -> Built) -> Built { value(onAsk: 1, make)! }

    /// What was built, building it on the `ask`th request (counted from the start or the last
    /// `release`); nil before that.
    func value(onAsk ask: Int, _ make: () -> Built) -> Built? {
        if let built = ifBuilt { return built }
        return asks.withLock { asks in
            if let built = ifBuilt { return built }  // built by another thread meanwhile
            asks += 1
            guard asks >= ask else { return nil }
            let made = make()
            published.store(Int(bitPattern: Unmanaged.passRetained(made).toOpaque()), ordering: .releasing)
            return made
        }
    }
}
