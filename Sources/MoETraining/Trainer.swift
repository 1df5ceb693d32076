import Foundation
import MoECore

/// Everything that decides a training run besides the model config. A resumed run must use the
/// same options, or it would not reproduce the uninterrupted one.
public struct TrainingOptions: Codable, Sendable, Equatable {
    public var steps = 1000
    public var batchSize = 16
    public var sequenceLength = 128
    public var learningRate: Float = 3e-3
    public var warmupSteps = 50
    public var weightDecay: Float = 0.1
    public var clipNorm: Float = 1
    /// Coefficient of the load-balance loss (Switch/Mixtral practice; RMoE's released code
    /// uses 0.001 on the pooled loss).
    public var balanceCoefficient: Float = 0.01
    /// True: one balance loss over every layer's tokens pooled (RMoE's released code); false: a
    /// loss per layer, averaged over layers.
    public var balancePooled = false
    /// Coefficient of the router z-loss; 0 turns it off.
    public var zLossCoefficient: Float = 0
    public var seed: UInt64 = 1

    public init() {}

    enum CodingKeys: String, CodingKey {
        case steps, seed
        case batchSize = "batch_size"
        case sequenceLength = "sequence_length"
        case learningRate = "learning_rate"
        case warmupSteps = "warmup_steps"
        case weightDecay = "weight_decay"
        case clipNorm = "clip_norm"
        case balanceCoefficient = "balance_coefficient"
        case zLossCoefficient = "z_loss_coefficient"
        case balancePooled = "balance_pooled"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        steps = try c.decode(Int.self, forKey: .steps)
        seed = try c.decode(UInt64.self, forKey: .seed)
        batchSize = try c.decode(Int.self, forKey: .batchSize)
        sequenceLength = try c.decode(Int.self, forKey: .sequenceLength)
        learningRate = try c.decode(Float.self, forKey: .learningRate)
        warmupSteps = try c.decode(Int.self, forKey: .warmupSteps)
        weightDecay = try c.decode(Float.self, forKey: .weightDecay)
        clipNorm = try c.decode(Float.self, forKey: .clipNorm)
        balanceCoefficient = try c.decode(Float.self, forKey: .balanceCoefficient)
        zLossCoefficient = try c.decode(Float.self, forKey: .zLossCoefficient)
        // States saved before the option existed trained per layer.
        balancePooled = try c.decodeIfPresent(Bool.self, forKey: .balancePooled) ?? false
    }

    /// The first option that cannot work, worded as "steps must be at least 1, got -5".
    public var problem: String? {
        if steps < 1 { return "steps must be at least 1, got \(steps)" }
        if !(1...4096).contains(batchSize) { return "batch_size must be between 1 and 4096, got \(batchSize)" }
        if sequenceLength < 2 { return "sequence_length must be at least 2, got \(sequenceLength)" }
        if !(learningRate.isFinite && learningRate > 0) { return "learning_rate must be a positive number, got \(learningRate)" }
        if warmupSteps < 0 { return "warmup_steps must be at least 0, got \(warmupSteps)" }
        for (name, value) in [
            ("weight_decay", weightDecay), ("balance_coefficient", balanceCoefficient), ("z_loss_coefficient", zLossCoefficient),
        ]
        where !(value.isFinite && value >= 0) { return "\(name) must be a finite number ≥ 0, got \(value)" }
        if !(clipNorm.isFinite && clipNorm > 0) { return "clip_norm must be a positive number, got \(clipNorm)" }
        return nil
    }

    public var schedule: LearningRateSchedule {
        LearningRateSchedule(peak: learningRate, warmupSteps: min(warmupSteps, steps), totalSteps: steps)
    }
}

/// What one optimisation step did.
public struct StepReport: Sendable {
    public var step: Int
    /// LM cross-entropy (nats per token).
    public var crossEntropy: Float
    /// Load-balance loss averaged over layers (k at uniform routing).
    public var balance: Float
    public var zLoss: Float
    /// The objective that was differentiated.
    public var loss: Float
    public var gradientNorm: Float
    public var learningRate: Float
}

public enum TrainingError: Error, CustomStringConvertible, Equatable {
    case nonFinite(step: Int, what: String)
    case stateMismatch(path: String, detail: String)

    public var description: String {
        switch self {
        case .nonFinite(let step, let what):
            return
                "the \(what) became NaN/inf at step \(step + 1); parameters were left as they were — lower --learning-rate, or resume from the last checkpoint"
        case .stateMismatch(let path, let detail):
            return "cannot resume from \(path): \(detail) — resume with the options the run started with, or start afresh without --resume"
        }
    }
}

/// A training run: parameters, AdamW state and the step counter, advanced one batch at a time.
/// The loop itself is the caller's (the `train` command draws progress and writes checkpoints).
public struct Trainer {
    public let options: TrainingOptions
    /// The model's structure (config, router, RoPE tables, parameter names); its weights are
    /// `parameterList`.
    public let structure: MoEModel
    public private(set) var parameterList: ParameterList
    public private(set) var optimizer: AdamW
    /// Steps completed.
    public private(set) var step = 0
    /// Cores to use (the result is the same for any number).
    public var threads = Kernels.threads
    let data: TokenStream

    /// A fresh run: the model initialised from `options.seed`.
    public init(config: ModelConfig, options: TrainingOptions, data: TokenStream) throws {
        HeapReuse.enable()  // a step frees and reallocates the same few hundred buffers (up to 8 MB)
        try Self.checkMemory(config: config, options: options, path: "config")
        structure = try MoEModel(config: config, seed: options.seed)
        parameterList = ParameterList(structure.declaredParameters)
        optimizer = AdamW(weightDecay: options.weightDecay)
        self.options = options
        self.data = data
    }

    public var config: ModelConfig { structure.config }
    /// The current parameters by checkpoint name.
    public var parameters: [String: Tensor] { parameterList.named }
    public var isFinished: Bool { step >= options.steps }
    public var tokensPerStep: Int { options.batchSize * options.sequenceLength }

    /// The current parameters as an inference model.
    public func model() throws -> MoEModel {
        var source = NamedTensors(parameters)
        return try MoEModel(config: config, from: &source)
    }

    /// A batch is cut into this many shards of whole sequences, each differentiated on its own
    /// tape; the losses and gradients are their token-weighted sums, added in shard order. The
    /// load-balance and z-losses are therefore per shard, as Switch Transformer computes them
    /// per device. Shards run side by side on `threads` cores, and since their number
    /// is fixed, not taken from the thread count, the run is the same on one core or two.
    public static let shards = 2

    /// Loss and gradients of one batch, the gradients in `parameterList` order; nothing changes.
    func lossAndGradients(inputs: [Int], targets: [Int]) -> (StepReport, [Tensor]) {
        let t = options.sequenceLength
        let sequences = inputs.count / t
        let shardCount = max(1, min(Self.shards, sequences))
        let bounds = (0...shardCount).map { $0 * sequences / shardCount * t }
        let parallel = min(threads, shardCount)
        var results = [ShardResult?](repeating: nil, count: shardCount)
        results.withUnsafeMutableBufferPointer { slots in
            Kernels.parallelFor(shardCount, threads: parallel) { s in
                let range = bounds[s]..<bounds[s + 1]
                slots[s] = shard(
                    inputs: Array(inputs[range]), targets: Array(targets[range]),
                    weight: Float(range.count) / Float(inputs.count), threads: max(1, threads / parallel))
            }
        }
        var total = results[0]!
        let rest = results.dropFirst().map { $0! }
        for result in rest {
            total.crossEntropy += result.crossEntropy
            total.balance += result.balance
            total.zLoss += result.zLoss
            total.objective += result.objective
        }
        // Summed parameter by parameter (in parallel), shard by shard (in order).
        total.gradients.withUnsafeMutableBufferPointer { sums in
            Kernels.parallelFor(sums.count, threads: threads) { index in
                var sum = sums[index]
                sums[index] = Tensor(zeros: [])  // keep the sum uniquely referenced
                sum.scalars.withUnsafeMutableBufferPointer { sp in
                    for result in rest {
                        result.gradients[index].scalars.withUnsafeBufferPointer { gp in
                            Kernels.axpy(1, gp.baseAddress!, sp.baseAddress!, count: sp.count)
                        }
                    }
                }
                sums[index] = sum
            }
        }
        let report = StepReport(
            step: step, crossEntropy: total.crossEntropy, balance: total.balance, zLoss: total.zLoss,
            loss: total.objective, gradientNorm: globalNorm(total.gradients),
            learningRate: options.schedule.rate(at: step))
        return (report, total.gradients)
    }

    /// One shard's losses and gradients, all already multiplied by its share of the batch's tokens.
    struct ShardResult {
        var crossEntropy: Float, balance: Float, zLoss: Float, objective: Float
        /// In `parameterList` order.
        var gradients: [Tensor]
    }

    func shard(inputs: [Int], targets: [Int], weight: Float, threads: Int) -> ShardResult {
        let tape = Tape(threads: threads)
        let leaves = parameterList.tensors.map { tape.leaf($0) }
        let forward = structure.forward(
            batch: inputs, sequenceLength: options.sequenceLength, on: tape, leaves: parameterList.walkOrder.map { leaves[$0] })
        let crossEntropy = tape.crossEntropy(forward.logits, targets: targets)
        var objective = crossEntropy
        let layers = Float(forward.routing.count)
        var balance: Float = 0
        var zLoss: Float = 0
        // The hash router has nothing to learn, so the auxiliary losses would only add constants.
        if config.router != .hash {
            if options.balancePooled {
                let b = tape.loadBalanceLoss(pooling: forward.routing.map { ($0.probabilities, $0.choices) })
                balance = tape.value(b).scalars[0]
                objective = tape.add(objective, tape.scale(b, by: options.balanceCoefficient))
            }
            for layer in forward.routing {
                if !options.balancePooled {
                    let b = tape.loadBalanceLoss(probabilities: layer.probabilities, choices: layer.choices)
                    balance += tape.value(b).scalars[0] / layers
                    objective = tape.add(objective, tape.scale(b, by: options.balanceCoefficient / layers))
                }
                if options.zLossCoefficient > 0 {
                    let z = tape.zLoss(layer.logits)
                    zLoss += tape.value(z).scalars[0] / layers
                    objective = tape.add(objective, tape.scale(z, by: options.zLossCoefficient / layers))
                }
            }
        }
        let weighted = tape.scale(objective, by: weight)
        tape.backward(from: weighted)
        let gradients = leaves.map { tape.gradient($0) }
        return ShardResult(
            crossEntropy: tape.value(crossEntropy).scalars[0] * weight, balance: balance * weight,
            zLoss: zLoss * weight, objective: tape.value(weighted).scalars[0], gradients: gradients)
    }

    /// One optimisation step: batch, forward, backward, clip, AdamW. Throws, leaving the
    /// parameters untouched, if the loss or the gradients are not finite.
    @discardableResult
    public mutating func trainStep() throws -> StepReport {
        let batch = data.batch(step: step, seed: options.seed, batchSize: options.batchSize, sequenceLength: options.sequenceLength)
        let (report, gradients) = lossAndGradients(inputs: batch.inputs, targets: batch.targets)
        guard report.loss.isFinite else { throw TrainingError.nonFinite(step: step, what: "loss") }
        guard report.gradientNorm.isFinite else { throw TrainingError.nonFinite(step: step, what: "gradient norm") }
        let clip = report.gradientNorm > options.clipNorm ? options.clipNorm / report.gradientNorm : 1
        optimizer.update(
            &parameterList.tensors, gradients: gradients, learningRate: report.learningRate, gradientScale: clip, threads: threads)
        step += 1
        return report
    }

    // MARK: Resumable state

    /// Parameters, both AdamW moments (all F32, so a resumed run continues bit for bit), the
    /// step, the options and the config, in one safetensors file written atomically.
    public func saveState(to path: String) throws {
        var tensors: [String: Tensor] = [:]
        for (name, value) in zip(parameterList.names, parameterList.tensors) { tensors["param/\(name)"] = value }
        for (name, value) in zip(parameterList.names, optimizer.firstMoment) { tensors["adam_m/\(name)"] = value }
        for (name, value) in zip(parameterList.names, optimizer.secondMoment) { tensors["adam_v/\(name)"] = value }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let metadata = [
            "format": "moescope-training-state",
            "step": String(step),
            "adam_updates": String(optimizer.updates),
            "options": String(decoding: try encoder.encode(options), as: UTF8.self),
            "config": String(decoding: try config.encoded(), as: UTF8.self),
        ]
        try SafeTensorsFile.write(tensors, dtype: .f32, metadata: metadata, to: path)
    }

    /// The options a saved run was started with.
    public static func savedOptions(at path: String) throws -> TrainingOptions {
        try savedOptions(SafeTensorsFile(path: path))
    }

    static func savedOptions(_ file: SafeTensorsFile) throws -> TrainingOptions {
        let path = file.path
        guard file.metadata["format"] == "moescope-training-state", let json = file.metadata["options"],
            let options = try? JSONDecoder().decode(TrainingOptions.self, from: Data(json.utf8))
        else {
            throw TrainingError.stateMismatch(path: path, detail: "not a moescope training state")
        }
        if let problem = options.problem {
            throw TrainingError.stateMismatch(path: path, detail: "its saved options are invalid (\(problem))")
        }
        return options
    }

    /// Checks a saved state's metadata against the run about to continue it, before anything
    /// is allocated or trained: the format, the options and config it was started with, and a
    /// step counter inside the run (0 ≤ step < steps, AdamW updates ≤ step). Returns (step,
    /// updates).
    @discardableResult
    public static func checkState(at path: String, config: ModelConfig, options: TrainingOptions) throws -> (step: Int, updates: Int) {
        try checkState(SafeTensorsFile(path: path), config: config, options: options)
    }

    static func checkState(_ file: SafeTensorsFile, config: ModelConfig, options: TrainingOptions) throws -> (step: Int, updates: Int) {
        let path = file.path
        let saved = try savedOptions(file)
        guard saved == options else {
            throw TrainingError.stateMismatch(path: path, detail: "it was started with different \(Self.differences(saved, options))")
        }
        guard let configJSON = file.metadata["config"],
            let savedConfig = try? ModelConfig(json: Data(configJSON.utf8), path: path), savedConfig == config
        else {
            throw TrainingError.stateMismatch(path: path, detail: "its model config differs")
        }
        guard let step = file.metadata["step"].flatMap(Int.init), let updates = file.metadata["adam_updates"].flatMap(Int.init) else {
            throw TrainingError.stateMismatch(path: path, detail: "the step counter is missing")
        }
        guard step >= 0, step < options.steps else {
            throw TrainingError.stateMismatch(path: path, detail: "its step \(step) is outside the run's 0…\(options.steps - 1)")
        }
        guard updates >= 0, updates <= step else {
            throw TrainingError.stateMismatch(path: path, detail: "it records \(updates) optimiser updates after \(step) steps")
        }
        return (step, updates)
    }

    /// Continues a run saved by `saveState`. `config` and `options` must be the saved ones;
    /// every tensor is checked for its shape as it is read.
    public init(resumingFrom path: String, config: ModelConfig, options: TrainingOptions, data: TokenStream) throws {
        HeapReuse.enable()  // a step frees and reallocates the same few hundred buffers (up to 8 MB)
        let file = try SafeTensorsFile(path: path)
        let (step, updates) = try Self.checkState(file, config: config, options: options)
        try self.init(config: config, options: options, data: data)
        for (index, name) in parameterList.names.enumerated() {
            let shape = parameterList.tensors[index].shape
            parameterList.tensors[index] = try file.tensor("param/\(name)", shape: shape)
            if updates > 0 {
                optimizer.firstMoment.append(try file.tensor("adam_m/\(name)", shape: shape))
                optimizer.secondMoment.append(try file.tensor("adam_v/\(name)", shape: shape))
            }
        }
        optimizer.updates = updates
        self.step = step
    }

    /// Bytes a run takes (nil: more than can be counted): F32 parameters, one gradient set per
    /// shard plus their sum, both AdamW moments, and the activations each shard's tape keeps —
    /// per token and layer about 24 vectors of the model width, the experts' hidden rows, the
    /// router outputs, and per head the attention scores over the sequence; per token the
    /// logits and their gradient.
    public static func trainingBytes(config c: ModelConfig, options o: TrainingOptions) -> Int? {
        let p = MemoryBudget.product
        let perTokenLayer = MemoryBudget.sum([
            p([24, c.hiddenSize]), p([c.topK, 6, c.expertHiddenSize]), p([4, c.numExperts]),
            p([3, c.numHeads, o.sequenceLength]), p([3, max(c.routerHiddenSize, c.gruHiddenSize)]),
        ])
        let perToken = MemoryBudget.sum([perTokenLayer.flatMap { p([$0, c.numLayers]) }, p([3, c.vocabSize])])
        return MemoryBudget.sum([
            c.parameterCount.flatMap { p([$0, 4, 4 + Self.shards]) },
            perToken.flatMap { p([$0, o.batchSize, o.sequenceLength, 4]) },
        ])
    }

    /// Refuses, with what it needs and what there is, a run that would not fit in memory.
    public static func checkMemory(config: ModelConfig, options: TrainingOptions, path: String) throws {
        let available = MemoryBudget.availableBytes
        let needed = trainingBytes(config: config, options: options)
        guard let needed, needed <= available else {
            throw CheckpointError.tooLarge(
                path: path, what: "training (batch \(options.batchSize) × \(options.sequenceLength) tokens)",
                neededBytes: needed, availableBytes: available)
        }
    }
}

extension Trainer {
    /// "learning_rate (3e-3 vs 1)": the option names on which two runs differ.
    static func differences(_ saved: TrainingOptions, _ given: TrainingOptions) -> String {
        func fields(_ options: TrainingOptions) -> [String: String] {
            let object = (try? JSONSerialization.jsonObject(with: JSONEncoder().encode(options))) as? [String: Any] ?? [:]
            return object.mapValues { "\($0)" }
        }
        let (a, b) = (fields(saved), fields(given))
        return a.keys.sorted().filter { a[$0] != b[$0] }.map { "\($0) (\(a[$0]!) then, \(b[$0] ?? "?") now)" }.joined(separator: ", ")
    }
}
