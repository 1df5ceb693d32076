import ArgumentParser
import Foundation
import MoECore
import MoETraining

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train the MoE model with one router on the corpus's training split.",
        discussion: """
            Writes a checkpoint directory (config.json, model.safetensors, tokenizer.json). While it runs, the full training state \
            (F32 weights and AdamW moments) is saved atomically to DIR/training-state.safetensors every --save-every steps and on \
            Ctrl-C; --resume continues from it and gives the same weights as an uninterrupted run.
            """)

    @Option(help: "Router to train.")
    var router: RouterKind = .gru
    @Option(help: "Optimisation steps.") var steps: Int?
    @Option(help: "Sequences per step.") var batchSize: Int?
    @Option(help: "Tokens per sequence.") var sequenceLength: Int?
    @Option(help: "Peak learning rate (after warm-up; cosine decay to 10%).") var learningRate: Float?
    @Option(help: "Linear warm-up steps.") var warmup: Int?
    @Option(help: "Router z-loss coefficient (0 = off; ST-MoE uses 0.001).") var zLoss: Float?
    @Option(
        help:
            "Load-balance loss: per-layer (one per layer, averaged; Switch/Mixtral) or pooled (one over every layer's tokens; RMoE's released code)."
    )
    var balanceLoss: BalanceLossForm?
    @Option(help: "Load-balance loss coefficient (default 0.01; RMoE's released code uses 0.001 with --balance-loss pooled).")
    var balanceCoefficient: Float?
    @Option(help: "GRU router state width p (default 64; RMoE uses 128).") var gruHiddenSize: Int?
    @Flag(help: "Cut the GRU router's recurrence over depth (h_{i−1} = 0 at every layer): RMoE's ablation.") var noGruRecurrence = false
    @Option(help: "Seed for initialisation and batch sampling.", transform: parseSeed) var seed: UInt64?
    @Option(help: ArgumentHelp("Output checkpoint directory (default: runs/<router>).", valueName: "dir")) var out: String?
    @Flag(help: "Continue the interrupted run saved in --out.") var resume = false
    @Option(help: "Save the training state every N steps.") var saveEvery = 100
    @Option(help: "Weight precision of the final checkpoint.") var dtype: SafeTensorsDType = .f16
    @Option(help: ArgumentHelp("Model shape as a config.json (default: the standard shape).", valueName: "path")) var config: String?
    @OptionGroup var assets: AssetOptions

    @Flag(help: "Replace a finished checkpoint already in --out.") var force = false

    func validate() throws {
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1, got \(steps)") }
        if let steps, steps > 1_000_000_000 { throw ValidationError("--steps must be at most 1000000000, got \(steps)") }
        if let batchSize, !(1...4096).contains(batchSize) {
            throw ValidationError("--batch-size must be between 1 and 4096, got \(batchSize)")
        }
        if let sequenceLength, sequenceLength < 2 { throw ValidationError("--sequence-length must be at least 2, got \(sequenceLength)") }
        if let learningRate, !(learningRate.isFinite && learningRate > 0 && learningRate <= 10) {
            throw ValidationError("--learning-rate must be a number above 0 and at most 10, got \(learningRate)")
        }
        if let warmup, warmup < 0 { throw ValidationError("--warmup must be at least 0, got \(warmup)") }
        if let zLoss, !(zLoss.isFinite && zLoss >= 0) { throw ValidationError("--z-loss must be a finite number ≥ 0, got \(zLoss)") }
        if let balanceCoefficient, !(balanceCoefficient.isFinite && balanceCoefficient >= 0) {
            throw ValidationError("--balance-coefficient must be a finite number ≥ 0, got \(balanceCoefficient)")
        }
        if let gruHiddenSize, !(1...4096).contains(gruHiddenSize) {
            throw ValidationError("--gru-hidden-size must be between 1 and 4096, got \(gruHiddenSize)")
        }
        if (gruHiddenSize != nil || noGruRecurrence) && router != .gru {
            throw ValidationError("--gru-hidden-size and --no-gru-recurrence apply to --router gru only")
        }
        guard saveEvery >= 1 else { throw ValidationError("--save-every must be at least 1, got \(saveEvery)") }
        if resume && force { throw ValidationError("--resume and --force both given — --force starts over, --resume continues; pass one") }
    }

    func run() throws {
        let directory = out ?? "runs/\(router.rawValue)"
        let statePath = "\(directory)/training-state.safetensors"
        // Where the run will write, checked before anything slow happens.
        try OutputPath.checkFolder(directory, option: "--out")
        if FileManager.default.fileExists(atPath: directory) {
            let stale = removeStaleTemporaryFiles(in: directory)
            if !stale.isEmpty {
                printError(
                    "note: removed \(stale.count) temporary file(s) left by an interrupted save in \(directory): \(stale.joined(separator: ", "))"
                )
            }
            if !resume, !force, FileManager.default.fileExists(atPath: "\(directory)/\(Checkpoint.weightsFile)"),
                !FileManager.default.fileExists(atPath: statePath)
            {
                throw CLIError(
                    "\(directory) already holds a trained checkpoint (\(Checkpoint.weightsFile)) — pass --force to replace it, or choose another --out"
                )
            }
        }
        let locator = try assets.locate()
        let tokenizer = try Tokenizer.load(path: locator.tokenizerPath)

        var modelConfig = try config.map { try ModelConfig.load(path: $0) } ?? ModelConfig()
        modelConfig.router = router
        if let gruHiddenSize { modelConfig.gruHiddenSize = gruHiddenSize }
        if noGruRecurrence { modelConfig.gruRecurrence = false }
        modelConfig.vocabSize = tokenizer.vocabSize
        try modelConfig.validate(path: config ?? "the default config")

        // Options: the saved run's when resuming, with any flag given on the command line on top
        // (a flag that contradicts the saved run is refused by the trainer).
        var options = TrainingOptions()
        if resume {
            guard FileManager.default.fileExists(atPath: statePath) else {
                throw CLIError("nothing to resume: \(statePath) does not exist — start the run without --resume")
            }
            options = try Trainer.savedOptions(at: statePath)
        } else if FileManager.default.fileExists(atPath: statePath) {
            throw CLIError("\(directory) holds an unfinished run — continue it with --resume, or delete \(statePath) to start over")
        }
        if let steps { options.steps = steps }
        if let batchSize { options.batchSize = batchSize }
        if let sequenceLength { options.sequenceLength = sequenceLength }
        if let learningRate { options.learningRate = learningRate }
        if let warmup { options.warmupSteps = warmup }
        if let zLoss { options.zLossCoefficient = zLoss }
        if let balanceLoss { options.balancePooled = balanceLoss == .pooled }
        if let balanceCoefficient { options.balanceCoefficient = balanceCoefficient }
        if let seed { options.seed = seed }
        guard options.sequenceLength <= modelConfig.contextLength else {
            throw CLIError("--sequence-length \(options.sequenceLength) exceeds the model's context of \(modelConfig.contextLength)")
        }
        try Trainer.checkMemory(config: modelConfig, options: options, path: config ?? "the default config")
        if resume { try Trainer.checkState(at: statePath, config: modelConfig, options: options) }

        let corpusPath = locator.corpusPath
        printError("tokenising the training split of \(corpusPath)…")
        let stream = TokenStream(documents: try Corpus.load(path: corpusPath).documents(in: .train), tokenizer: tokenizer)
        guard stream.tokens.count > options.sequenceLength + 1 else {
            throw CLIError("the training split has \(stream.tokens.count) tokens, fewer than one sequence — check the corpus")
        }

        try OutputPath.createFolder(directory, option: "--out")
        var trainer =
            resume
            ? try Trainer(resumingFrom: statePath, config: modelConfig, options: options, data: stream)
            : try Trainer(config: modelConfig, options: options, data: stream)
        printError(
            "training \(router.rawValue): \(trainer.structure.parameterCount) parameters, \(stream.tokens.count) training tokens, "
                + "\(options.steps) steps of \(trainer.tokensPerStep) tokens\(resume ? ", resuming at step \(trainer.step)" : "")")

        StopSignal.install()
        var progress = ProgressLine(
            "train \(router.rawValue): step", total: options.steps, unit: "tok",
            unitsPerItem: trainer.tokensPerStep, startingAt: trainer.step)
        var recentLoss: [Float] = []
        let began = monotonicNanoseconds()
        while !trainer.isFinished {
            if let signal = StopSignal.pending {
                try trainer.saveState(to: statePath)
                progress.finish()
                printError("stopped by signal \(signal) after step \(trainer.step); state saved to \(statePath) — continue with --resume")
                throw ExitCode(128 + signal)
            }
            let report: StepReport
            do { report = try trainer.trainStep() } catch let error as TrainingError {
                progress.finish()
                throw CLIError("\(error)")
            }
            recentLoss = Array((recentLoss + [report.crossEntropy]).suffix(20))
            let mean = recentLoss.reduce(0, +) / Float(recentLoss.count)
            progress.update(
                trainer.step, detail: String(format: "loss %.3f · balance %.3f · lr %.2e", mean, report.balance, report.learningRate))
            if trainer.step % saveEvery == 0 && !trainer.isFinished { try trainer.saveState(to: statePath) }
        }
        progress.finish()

        let meanLoss = recentLoss.reduce(0, +) / Float(max(1, recentLoss.count))
        let checkpoint = Checkpoint(model: try trainer.model(), tokenizer: tokenizer)
        try checkpoint.save(
            to: directory, dtype: dtype,
            metadata: [
                "steps": String(options.steps), "seed": String(options.seed),
                "tokens_seen": String(options.steps * trainer.tokensPerStep),
                "balance_loss": options.balancePooled ? "pooled" : "per-layer", "balance_coefficient": String(options.balanceCoefficient),
                "final_train_loss": String(format: "%.4f", meanLoss),
            ])
        try? FileManager.default.removeItem(atPath: statePath)
        print(
            "trained \(router.rawValue) in \(ProgressLine.format(seconds: secondsSince(began))): "
                + "train loss \(String(format: "%.3f", meanLoss)) (mean of the last \(recentLoss.count) steps); checkpoint written to \(directory)"
        )
    }
}

/// How `train` takes the load-balance loss over layers.
enum BalanceLossForm: String, ExpressibleByArgument, CaseIterable {
    case perLayer = "per-layer"
    case pooled
}

/// `--dtype f32|f16|bf16`: the float types, in lower case (the integer types hold no weights).
extension SafeTensorsDType: ExpressibleByArgument {
    public init?(argument: String) {
        guard let dtype = SafeTensorsDType(rawValue: argument.uppercased()), dtype.isFloat else { return nil }
        self = dtype
    }

    public static var allValueStrings: [String] { allCases.filter(\.isFloat).map { $0.rawValue.lowercased() } }

    public var defaultValueDescription: String { rawValue.lowercased() }
}
