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
    /// Coefficient of the load-balance loss (RMoE's value).
    public var balanceCoefficient: Float = 0.01
    /// Coefficient of the router z-loss; 0 turns it off.
    public var zLossCoefficient: Float = 0
    public var seed: UInt64 = 1

    public init() {}

    enum CodingKeys: String, CodingKey {
        case steps, seed
        case batchSize = "batch_size", sequenceLength = "sequence_length", learningRate = "learning_rate"
        case warmupSteps = "warmup_steps", weightDecay = "weight_decay", clipNorm = "clip_norm"
        case balanceCoefficient = "balance_coefficient", zLossCoefficient = "z_loss_coefficient"
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
        case let .nonFinite(step, what):
            return "the \(what) became NaN/inf at step \(step + 1); parameters were left as they were — lower --learning-rate, or resume from the last checkpoint"
        case let .stateMismatch(path, detail):
            return "cannot resume from \(path): \(detail) — resume with the options the run started with, or start afresh without --resume"
        }
    }
}

/// A training run: parameters, AdamW state and the step counter, advanced one batch at a time.
/// The loop itself is the caller's (the `train` command draws progress and writes checkpoints).
public struct Trainer {
    public let options: TrainingOptions
    /// The model's structure (config, router, RoPE tables); its weights are `parameters`.
    public let structure: MoEModel
    public private(set) var parameters: [String: Tensor]
    public private(set) var optimizer: AdamW
    /// Steps completed.
    public private(set) var step = 0
    let data: TokenStream

    /// A fresh run: the model initialised from `options.seed`.
    public init(config: ModelConfig, options: TrainingOptions, data: TokenStream) throws {
        structure = try MoEModel(config: config, seed: options.seed)
        parameters = structure.namedParameters
        optimizer = AdamW(weightDecay: options.weightDecay)
        self.options = options
        self.data = data
    }

    public var config: ModelConfig { structure.config }
    public var isFinished: Bool { step >= options.steps }
    public var tokensPerStep: Int { options.batchSize * options.sequenceLength }

    /// The current parameters as an inference model.
    public func model() throws -> MoEModel {
        var source = NamedTensors(parameters)
        return try MoEModel(config: config, from: &source)
    }

    /// Loss and gradients of one batch; nothing changes.
    public func lossAndGradients(inputs: [Int], targets: [Int]) -> (StepReport, [String: Tensor]) {
        let tape = Tape()
        var leaves: [String: Variable] = [:]
        for name in parameters.keys.sorted() { leaves[name] = tape.leaf(parameters[name]!) }
        let forward = structure.forward(batch: inputs, sequenceLength: options.sequenceLength, on: tape) { leaves[$0]! }
        let crossEntropy = tape.crossEntropy(forward.logits, targets: targets)
        var objective = crossEntropy
        let layers = Float(forward.routing.count)
        var balance: Float = 0, zLoss: Float = 0
        // The hash router has nothing to learn, so the auxiliary losses would only add constants.
        if config.router != .hash {
            for layer in forward.routing {
                let b = tape.loadBalanceLoss(probabilities: layer.probabilities, choices: layer.choices)
                balance += tape.value(b).scalars[0] / layers
                objective = tape.add(objective, tape.scale(b, by: options.balanceCoefficient / layers))
                if options.zLossCoefficient > 0 {
                    let z = tape.zLoss(layer.logits)
                    zLoss += tape.value(z).scalars[0] / layers
                    objective = tape.add(objective, tape.scale(z, by: options.zLossCoefficient / layers))
                }
            }
        }
        tape.backward(from: objective)
        var gradients: [String: Tensor] = [:]
        for (name, leaf) in leaves { gradients[name] = tape.gradient(leaf) }
        let report = StepReport(step: step, crossEntropy: tape.value(crossEntropy).scalars[0], balance: balance, zLoss: zLoss,
                                loss: tape.value(objective).scalars[0], gradientNorm: globalNorm(gradients),
                                learningRate: options.schedule.rate(at: step))
        return (report, gradients)
    }

    /// One optimisation step: batch, forward, backward, clip, AdamW. Throws, leaving the
    /// parameters untouched, if the loss or the gradients are not finite.
    @discardableResult
    public mutating func trainStep() throws -> StepReport {
        let batch = data.batch(step: step, seed: options.seed, batchSize: options.batchSize, sequenceLength: options.sequenceLength)
        var (report, gradients) = lossAndGradients(inputs: batch.inputs, targets: batch.targets)
        guard report.loss.isFinite else { throw TrainingError.nonFinite(step: step, what: "loss") }
        guard report.gradientNorm.isFinite else { throw TrainingError.nonFinite(step: step, what: "gradient norm") }
        if report.gradientNorm > options.clipNorm {
            let factor = options.clipNorm / report.gradientNorm
            for name in gradients.keys { gradients[name] = gradients[name]!.mapped { $0 * factor } }
        }
        optimizer.update(&parameters, gradients: gradients, learningRate: report.learningRate)
        step += 1
        return report
    }

    // MARK: Resumable state

    /// Parameters, both AdamW moments (all F32, so a resumed run continues bit for bit), the
    /// step, the options and the config, in one safetensors file written atomically.
    public func saveState(to path: String) throws {
        var tensors: [String: Tensor] = [:]
        for (name, value) in parameters { tensors["param/\(name)"] = value }
        for (name, value) in optimizer.firstMoment { tensors["adam_m/\(name)"] = value }
        for (name, value) in optimizer.secondMoment { tensors["adam_v/\(name)"] = value }
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
        let file = try SafeTensorsFile(path: path)
        guard file.metadata["format"] == "moescope-training-state", let json = file.metadata["options"],
              let options = try? JSONDecoder().decode(TrainingOptions.self, from: Data(json.utf8)) else {
            throw TrainingError.stateMismatch(path: path, detail: "not a moescope training state")
        }
        return options
    }

    /// Continues a run saved by `saveState`. `config` and `options` must be the saved ones.
    public init(resumingFrom path: String, config: ModelConfig, options: TrainingOptions, data: TokenStream) throws {
        let file = try SafeTensorsFile(path: path)
        let saved = try Self.savedOptions(at: path)
        guard saved == options else {
            throw TrainingError.stateMismatch(path: path, detail: "it was started with different \(Self.differences(saved, options))")
        }
        guard let configJSON = file.metadata["config"],
              let savedConfig = try? JSONDecoder().decode(ModelConfig.self, from: Data(configJSON.utf8)), savedConfig == config else {
            throw TrainingError.stateMismatch(path: path, detail: "its model config differs")
        }
        guard let step = file.metadata["step"].flatMap(Int.init), let updates = file.metadata["adam_updates"].flatMap(Int.init) else {
            throw TrainingError.stateMismatch(path: path, detail: "the step counter is missing")
        }
        try self.init(config: config, options: options, data: data)
        for name in parameters.keys {
            let shape = parameters[name]!.shape
            parameters[name] = try file.tensor("param/\(name)", shape: shape)
            if updates > 0 {
                optimizer.firstMoment[name] = try file.tensor("adam_m/\(name)", shape: shape)
                optimizer.secondMoment[name] = try file.tensor("adam_v/\(name)", shape: shape)
            }
        }
        optimizer.updates = updates
        self.step = step
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
