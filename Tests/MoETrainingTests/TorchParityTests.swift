import Foundation
import MoECore
import Testing

@testable import MoETraining

/// moescope against its PyTorch twin (scripts/torch_moe, which wrote the fixtures): for every
/// router, the same logits, router probabilities and top-k on a random model (initialised here
/// from the fixture's seed, so moescope's initialisation is held to PyTorch's replica of it too)
/// and on a briefly trained one (a checkpoint PyTorch wrote); and the same losses and gradients
/// for one training step. Checkpoints trained with torchrun are explored here on that guarantee.
@Suite struct TorchParityTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/torch_moe").path

    static let routers = RouterKind.allCases.map(\.rawValue)

    struct Reference {
        let ids: [Int]
        let logits: Tensor
        let probabilities: [Tensor]
        let topK: [Tensor]
        let text: String
        let seed: UInt64?

        init(folder: String) throws {
            let file = try SafeTensorsFile(path: "\(folder)/reference.safetensors")
            ids = try file.tensor("input_ids").scalars.map { Int($0) }
            logits = try file.tensor("logits")
            let layers = file.entries.keys.filter { $0.hasPrefix("probabilities.") }.count
            probabilities = try (0..<layers).map { try file.tensor("probabilities.\($0)") }
            topK = try (0..<layers).map { try file.tensor("top_k.\($0)") }
            text = file.metadata["text"] ?? ""
            seed = file.metadata["seed"].flatMap(UInt64.init)
        }
    }

    /// The model of a fixture: moescope's own initialisation for "random", the checkpoint for "trained".
    static func model(_ folder: String, reference: Reference) throws -> MoEModel {
        if let seed = reference.seed {
            return try MoEModel(config: ModelConfig.load(path: "\(folder)/config.json"), seed: seed)
        }
        return try Checkpoint.load(from: folder).model
    }

    @Test(arguments: routers, ["random", "trained"])
    func forwardMatchesPyTorch(router: String, variant: String) throws {
        let folder = "\(Self.fixtures)/\(router)-\(variant)"
        let reference = try Reference(folder: folder)
        let model = try Self.model(folder, reference: reference)
        let tokenizer = try Tokenizer.load(path: "\(folder)/tokenizer.json")
        #expect(tokenizer.encode(reference.text) == reference.ids)
        #expect(model.config.router.rawValue == router)
        let output = try model.forward(reference.ids)
        let k = model.config.topK
        let e = model.config.numExperts
        #expect(reference.probabilities.count == model.config.numLayers)

        // A token whose k-th and (k+1)-th probabilities tie within 1e-4 at some layer may
        // legitimately go to another expert there: from that layer on it is not compared.
        var tied = Set<Int>()
        var comparedSlots = 0
        for (l, expected) in reference.probabilities.enumerated() {
            for t in reference.ids.indices where !tied.contains(t) {
                let theirs = Array(expected.row(t))
                let ours = output.routing[t].layers[l]
                let sorted = theirs.sorted(by: >)
                if k < e, sorted[k - 1] - sorted[k] < 1e-4 {
                    tied.insert(t)
                    continue
                }
                let worst = zip(ours.probabilities, theirs).map { abs($0 - $1) }.max() ?? .infinity
                #expect(worst <= 1e-4, "\(router)-\(variant) L\(l) t\(t): probabilities differ by \(worst)")
                let expectedExperts = reference.topK[l].row(t).map { Int($0) }
                // Order inside the top k is compared unless two chosen experts nearly tie
                // (an exact tie, as Hash's 1/k, goes to the lower id on both sides).
                let innerTie = (0..<k - 1).contains { sorted[$0] != sorted[$0 + 1] && sorted[$0] - sorted[$0 + 1] < 1e-4 }
                if innerTie {
                    #expect(Set(ours.experts) == Set(expectedExperts), "\(router)-\(variant) L\(l) t\(t)")
                } else {
                    #expect(ours.experts == expectedExperts, "\(router)-\(variant) L\(l) t\(t)")
                }
                comparedSlots += 1
            }
        }
        for t in reference.ids.indices where !tied.contains(t) {
            let theirs = reference.logits.row(t)
            let ours = output.logits.row(t)
            let worst = zip(ours, theirs).map { abs($0 - $1) }.max() ?? .infinity
            let scale = max(1, theirs.map(abs).max()!)
            #expect(worst <= 1e-4 * scale, "\(router)-\(variant) t\(t): logits differ by \(worst)")
        }
        // Not vacuous: nearly every token is compared at every layer.
        #expect(comparedSlots * 10 >= reference.ids.count * model.config.numLayers * 8)
    }

    /// One training step on the trained fixture's weights: moescope's tape (through
    /// `Trainer.lossAndGradients`, with its two batch shards, the per-layer balance loss and
    /// the z-loss) against PyTorch's autograd.
    @Test(arguments: routers)
    func gradientsMatchPyTorch(router: String) throws {
        let file = try SafeTensorsFile(path: "\(Self.fixtures)/gradients/\(router).safetensors")
        let checkpoint = try Checkpoint.load(from: "\(Self.fixtures)/\(router)-trained")
        let config = checkpoint.model.config
        let inputs = try file.tensor("inputs").scalars.map { Int($0) }
        let targets = try file.tensor("targets").scalars.map { Int($0) }
        let losses = try file.tensor("losses").scalars  // objective, cross-entropy, balance, z-loss
        var options = TrainingOptions()
        options.sequenceLength = try #require(file.metadata["sequence_length"].flatMap(Int.init))
        options.batchSize = inputs.count / options.sequenceLength
        options.balanceCoefficient = try #require(file.metadata["balance_coefficient"].flatMap(Float.init))
        options.zLossCoefficient = try #require(file.metadata["z_loss_coefficient"].flatMap(Float.init))

        // The trainer takes its weights from a training state; write one holding the checkpoint's.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("torch-parity-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let statePath = "\(directory)/training-state.safetensors"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try SafeTensorsFile.write(
            Dictionary(uniqueKeysWithValues: checkpoint.model.namedParameters.map { ("param/\($0.key)", $0.value) }),
            metadata: [
                "format": "moescope-training-state", "step": "0", "adam_updates": "0",
                "options": String(decoding: try encoder.encode(options), as: UTF8.self),
                "config": String(decoding: try config.encoded(), as: UTF8.self),
            ],
            to: statePath)
        let trainer = try Trainer(resumingFrom: statePath, config: config, options: options, data: TokenStream(tokens: inputs + targets))
        let (report, gradientList) = trainer.lossAndGradients(inputs: inputs, targets: targets)
        let gradients = Dictionary(uniqueKeysWithValues: zip(trainer.parameterList.names, gradientList))

        for (ours, theirs, name) in [
            (report.loss, losses[0], "objective"), (report.crossEntropy, losses[1], "cross-entropy"),
            (report.balance, losses[2], "balance"), (report.zLoss, losses[3], "z-loss"),
        ] {
            #expect(abs(ours - theirs) <= 1e-5 * max(1, abs(theirs)), "\(router) \(name): \(ours) vs PyTorch \(theirs)")
        }
        let names = Set(file.entries.keys.filter { $0.hasPrefix("grad/") }.map { String($0.dropFirst(5)) })
        #expect(names == Set(gradients.keys))
        var largest: Float = 0
        for name in names.sorted() {
            let theirs = try file.tensor("grad/\(name)").scalars
            let ours = try #require(gradients[name]).scalars
            let scale = theirs.map(abs).max() ?? 0
            largest = max(largest, scale)
            let worst = zip(ours, theirs).map { abs($0 - $1) }.max() ?? .infinity
            #expect(worst <= 1e-4 * scale + 1e-7, "\(router) \(name): gradients differ by \(worst) (largest \(scale))")
        }
        #expect(largest > 1e-3, "the step has gradients worth comparing")
    }

    /// The shipped tokenizer gives PyTorch's trainer the ids it gives moescope's, on a text with
    /// every character class the pre-tokeniser tells apart (Unicode spaces, NEL, marks, digits).
    @Test func tokenizerMatchesPyTorch() throws {
        let data = try #require(FileManager.default.contents(atPath: "\(Self.fixtures)/tokenizer.json"))
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let text = try #require(object["text"] as? String)
        let ids = try #require(object["ids"] as? [Int])
        let assets = URL(fileURLWithPath: Self.fixtures).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("assets/tokenizer.json").path
        #expect(try Tokenizer.load(path: assets).encode(text) == ids)
    }
}
