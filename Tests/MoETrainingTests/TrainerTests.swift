import Foundation
import Testing

@testable import MoECore
@testable import MoETraining

@Suite struct TrainerTests {
    /// A learnable stream: a few short "words" repeated in a seeded random order.
    static let stream: TokenStream = {
        var generator = SeededGenerator(seed: 9)
        let words: [[Int]] = [[10, 11, 12, 13], [40, 41], [200, 201, 202], [7, 8, 9, 7], [150, 151, 152, 153, 154]]
        var tokens: [Int] = []
        while tokens.count < 4000 { tokens += words[Int(generator.next() % UInt64(words.count))] + [1] }
        return TokenStream(tokens: tokens)
    }()

    static func options(steps: Int, seed: UInt64 = 4) -> TrainingOptions {
        var options = TrainingOptions()
        options.steps = steps
        options.batchSize = 4
        options.sequenceLength = 16
        options.warmupSteps = 5
        options.learningRate = 1e-2
        options.seed = seed
        options.zLossCoefficient = 0.001
        return options
    }

    @Test(arguments: [RouterKind.linear, .gru, .hash])
    func lossDecreasesOnATinyModel(router: RouterKind) throws {
        var trainer = try Trainer(config: .tiny(router: router), options: Self.options(steps: 40), data: Self.stream)
        var losses: [Float] = []
        while !trainer.isFinished { losses.append(try trainer.trainStep().crossEntropy) }
        let first = losses.prefix(5).reduce(0, +) / 5
        let last = losses.suffix(5).reduce(0, +) / 5
        #expect(first > 5, "starts near ln(vocab): \(first)")
        #expect(last < first - 1.5, "loss went from \(first) to \(last)")
    }

    /// RMoE's setup: one balance loss pooled over layers at 0.001 — it trains, reports the pooled
    /// loss (≈ k), and changes the run; a state saved before the option existed reads as per-layer.
    @Test func pooledBalanceLossTrainsAndOldStatesReadAsPerLayer() throws {
        var options = Self.options(steps: 3)
        options.balancePooled = true
        options.balanceCoefficient = 0.001
        var pooled = try Trainer(config: .tiny(router: .gru), options: options, data: Self.stream)
        var perLayer = try Trainer(config: .tiny(router: .gru), options: Self.options(steps: 3), data: Self.stream)
        let report = try pooled.trainStep()
        _ = try perLayer.trainStep()
        #expect(report.balance > 1.5 && report.balance < 8, "pooled balance near k = 2 at initialisation: \(report.balance)")
        #expect(pooled.parameters != perLayer.parameters)
        var json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(options)) as! [String: Any]
        #expect(json["balance_pooled"] as? Bool == true)
        json.removeValue(forKey: "balance_pooled")
        let old = try JSONDecoder().decode(TrainingOptions.self, from: JSONSerialization.data(withJSONObject: json))
        #expect(old.balancePooled == false && old.balanceCoefficient == 0.001)
    }

    /// Shards run side by side on two cores or one after another on one: same bits either way.
    @Test func threadCountDoesNotChangeTheRun() throws {
        var one = try Trainer(config: .tiny(router: .gru), options: Self.options(steps: 4), data: Self.stream)
        var two = one
        one.threads = 1
        two.threads = 2
        while !one.isFinished {
            try one.trainStep()
            try two.trainStep()
        }
        #expect(one.parameters == two.parameters)
        #expect(one.optimizer.firstMoment == two.optimizer.firstMoment)
    }

    /// Without the per-shard auxiliary losses, the shards' weighted sum is the whole batch's
    /// loss and gradient (up to float summation order).
    @Test func shardedGradientsEqualTheWholeBatch() throws {
        var options = Self.options(steps: 1)
        options.balanceCoefficient = 0
        options.zLossCoefficient = 0
        let trainer = try Trainer(config: .tiny(router: .linear), options: options, data: Self.stream)
        let batch = Self.stream.batch(step: 0, seed: 4, batchSize: 4, sequenceLength: 16)
        let (report, sharded) = trainer.lossAndGradients(inputs: batch.inputs, targets: batch.targets)
        let whole = trainer.shard(inputs: batch.inputs, targets: batch.targets, weight: 1, threads: 1)
        #expect(abs(report.crossEntropy - whole.crossEntropy) < 1e-5)
        for (index, name) in trainer.parameterList.names.enumerated() {
            let worst = zip(whole.gradients[index].scalars, sharded[index].scalars).map { abs($0 - $1) }.max() ?? 0
            #expect(worst < 1e-5, "\(name): \(worst)")
        }
    }

    @Test func resumeEqualsUninterrupted() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("resume-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = ModelConfig.tiny(router: .gru)
        let options = Self.options(steps: 8)

        var straight = try Trainer(config: config, options: options, data: Self.stream)
        while !straight.isFinished { try straight.trainStep() }

        var first = try Trainer(config: config, options: options, data: Self.stream)
        for _ in 0..<3 { try first.trainStep() }
        let path = "\(directory)/training-state.safetensors"
        try first.saveState(to: path)
        var resumed = try Trainer(resumingFrom: path, config: config, options: options, data: Self.stream)
        #expect(resumed.step == 3)
        while !resumed.isFinished { try resumed.trainStep() }

        #expect(resumed.parameters == straight.parameters)  // bit for bit
        #expect(resumed.optimizer.secondMoment == straight.optimizer.secondMoment)

        var other = options
        other.learningRate = 1
        #expect { try Trainer(resumingFrom: path, config: config, options: other, data: Self.stream) } throws: {
            "\($0)".contains("learning_rate")
        }
    }

    @Test func sameSeedSameRun() throws {
        func run(_ seed: UInt64) throws -> [String: Tensor] {
            var trainer = try Trainer(config: .tiny(router: .mlp), options: Self.options(steps: 3, seed: seed), data: Self.stream)
            while !trainer.isFinished { try trainer.trainStep() }
            return trainer.parameters
        }
        #expect(try run(2) == run(2))
        #expect(try run(2) != run(3))
    }

    @Test func nonFiniteLossStopsWithoutTouchingParameters() throws {
        var options = Self.options(steps: 5)
        options.learningRate = .infinity
        var trainer = try Trainer(config: .tiny(router: .linear), options: options, data: Self.stream)
        try trainer.trainStep()  // the first update makes every weight inf or NaN
        let before = trainer.parameters
        #expect(throws: TrainingError.self) { try trainer.trainStep() }
        #expect(trainer.step == 1)
        #expect(trainer.parameters.keys == before.keys)
    }

    @Test func scheduleWarmsUpThenDecaysToTheFloor() {
        let schedule = LearningRateSchedule(peak: 1, warmupSteps: 10, totalSteps: 110, floorRatio: 0.1)
        #expect(abs(schedule.rate(at: 0) - 0.1) < 1e-6)
        #expect(abs(schedule.rate(at: 9) - 1) < 1e-6)
        #expect(abs(schedule.rate(at: 60) - 0.55) < 1e-5)  // halfway down the cosine
        #expect(abs(schedule.rate(at: 110) - 0.1) < 1e-6)
        #expect((10..<110).allSatisfy { schedule.rate(at: $0) >= schedule.rate(at: $0 + 1) })
    }

    /// One AdamW step written out by hand: the first update moves each weight by lr·sign(g)
    /// (bias-corrected m/√v = g/|g|), after decoupled decay on matrices only.
    @Test func adamWFirstStepMatchesHandComputation() {
        var optimizer = AdamW(weightDecay: 0.5)
        var parameters = [Tensor(shape: [1, 2], scalars: [1, -2]), Tensor(shape: [2], scalars: [1, 1])]  // w, gain
        let gradients = [Tensor(shape: [1, 2], scalars: [0.3, -4]), Tensor(shape: [2], scalars: [-1, 0.001])]
        optimizer.update(&parameters, gradients: gradients, learningRate: 0.1)
        let w = parameters[0].scalars
        let gain = parameters[1].scalars
        #expect(abs(w[0] - (1 * 0.95 - 0.1)) < 1e-5)
        #expect(abs(w[1] - (-2 * 0.95 + 0.1)) < 1e-5)
        #expect(abs(gain[0] - 1.1) < 1e-5)
        #expect(abs(gain[1] - 0.9) < 1e-4)
    }

    @Test func batchesAreAFunctionOfSeedAndStep() {
        let a = Self.stream.batch(step: 5, seed: 1, batchSize: 3, sequenceLength: 8)
        let b = Self.stream.batch(step: 5, seed: 1, batchSize: 3, sequenceLength: 8)
        let c = Self.stream.batch(step: 6, seed: 1, batchSize: 3, sequenceLength: 8)
        #expect(a.inputs == b.inputs && a.targets == b.targets)
        #expect(a.inputs != c.inputs)
        #expect(a.inputs[1..<8] == a.targets[0..<7])
    }
}
