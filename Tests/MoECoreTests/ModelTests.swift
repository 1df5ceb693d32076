import Foundation
import Testing

@testable import MoECore

@Suite struct RouterTests {
    /// PyTorch GRUCell written out element by element, from the DESIGN.md equations.
    static func referenceGRU(_ w: [String: Tensor], layer: Int, u: Tensor, h: Tensor) -> [Float] {
        let projector = w["model.layers.\(layer).block_sparse_moe.gate.projector.weight"]!
        let (wih, whh) = (w["model.router_gru.weight_ih"]!, w["model.router_gru.weight_hh"]!)
        let (bih, bhh) = (w["model.router_gru.bias_ih"]!.scalars, w["model.router_gru.bias_hh"]!.scalars)
        let p = projector.rows
        let d = projector.cols
        func sig(_ v: Float) -> Float { 1 / (1 + exp(-v)) }
        var out: [Float] = []
        for t in 0..<u.rows {
            let x = (0..<p).map { i in (0..<d).reduce(Float(0)) { $0 + projector.scalars[i * d + $1] * u.scalars[t * d + $1] } }
            let hv = Array(h.row(t))
            func gate(_ m: Tensor, _ v: [Float], _ row: Int) -> Float { (0..<p).reduce(Float(0)) { $0 + m.scalars[row * p + $1] * v[$1] } }
            for j in 0..<p {
                let r = sig(gate(wih, x, j) + bih[j] + gate(whh, hv, j) + bhh[j])
                let z = sig(gate(wih, x, p + j) + bih[p + j] + gate(whh, hv, p + j) + bhh[p + j])
                let n = tanh(gate(wih, x, 2 * p + j) + bih[2 * p + j] + r * (gate(whh, hv, 2 * p + j) + bhh[2 * p + j]))
                out.append((1 - z) * n + z * hv[j])
            }
        }
        return out
    }

    static func model(_ router: RouterKind, seed: UInt64 = 7) throws -> MoEModel {
        try MoEModel(config: .tiny(router: router), seed: seed)
    }

    static let tokens = [1, 72, 101, 108, 108, 111, 32, 299, 5, 72, 72, 200]

    @Test(arguments: RouterKind.allCases)
    func yieldsValidDistributionsAndKDistinctExperts(router: RouterKind) throws {
        let model = try Self.model(router)
        let config = model.config
        let result = try model.forward(Self.tokens)
        #expect(result.routing.count == Self.tokens.count)
        for trace in result.routing {
            #expect(trace.layers.count == config.numLayers)
            for layer in trace.layers {
                #expect(layer.probabilities.count == config.numExperts)
                #expect(layer.probabilities.allSatisfy { $0 >= 0 && $0 <= 1 })
                #expect(abs(layer.probabilities.reduce(0, +) - 1) < 1e-5)
                #expect(layer.experts.count == config.topK)
                #expect(Set(layer.experts).count == config.topK)
                #expect(abs(layer.weights.reduce(0, +) - 1) < 1e-5)
                // chosen experts are the most probable ones
                let floor = layer.experts.map { layer.probabilities[$0] }.min()!
                let rest = (0..<config.numExperts).filter { !layer.experts.contains($0) }
                #expect(rest.allSatisfy { layer.probabilities[$0] <= floor })
                #expect(layer.expertOutputNorms.allSatisfy { $0.isFinite && $0 > 0 })
                #expect((layer.gruHidden != nil) == (router == .gru))
            }
        }
        #expect(result.logits.shape == [Self.tokens.count, config.vocabSize])
        #expect(result.logits.scalars.allSatisfy { $0.isFinite })
    }

    @Test func hashIsDeterministicAndParameterFree() throws {
        let a = try Self.model(.hash, seed: 1)
        let b = try Self.model(.hash, seed: 2)
        #expect(a.router.parameterCount == 0)
        #expect(a.router.namedParameters.isEmpty)
        let ra = try a.forward(Self.tokens).routing
        let rb = try b.forward(Self.tokens).routing
        for (x, y) in zip(ra, rb) {
            #expect(x.layers.map(\.experts) == y.layers.map(\.experts), "same token, same experts, whatever the weights")
            for layer in x.layers {
                #expect(layer.weights == [Float](repeating: 1 / Float(a.config.topK), count: a.config.topK))
                #expect(layer.probabilities.filter { $0 > 0 }.count == a.config.topK)
            }
        }
        // Same token id at two positions routes identically; layers hash differently.
        #expect(ra[1].layers.map(\.experts) == ra[9].layers.map(\.experts))
        let router = HashRouter(.tiny(router: .hash))
        let perLayer = (0..<50).map { t in (0..<3).map { router.experts(token: t, layer: $0) } }
        #expect(perLayer.contains { $0[0] != $0[1] })
    }

    @Test(arguments: RouterKind.allCases)
    func parametersAreNamedUniquelyAndCountable(router: RouterKind) throws {
        let model = try Self.model(router)
        #expect(model.router.parameterCount == model.router.namedParameters.values.map(\.count).reduce(0, +))
        #expect(router == .hash || model.router.parameterCount > 0)
        let names = model.namedParameters.keys
        #expect(names.allSatisfy { $0.hasPrefix("model.") || $0 == "lm_head.weight" })
        if router == .linear { #expect(names.contains("model.layers.0.block_sparse_moe.gate.weight")) }
    }

    @Test func gruStateFlowsDownTheLayersButNotAlongTheSequence() throws {
        let model = try Self.model(.gru)
        let router = try #require(model.router as? GRURouter)
        var g = SeededGenerator(seed: 5)
        let u = Tensor(randomNormal: [3, model.config.hiddenSize], std: 1, using: &g)
        let tokens = [1, 2, 3]

        // Layer 1 with the state layer 0 left differs from layer 1 started fresh.
        var state = RouterDepthState()
        _ = router.logits(u, tokens: tokens, layer: 0, state: &state)
        let afterLayer0 = try #require(state.hidden)
        let chained = router.logits(u, tokens: tokens, layer: 1, state: &state)
        var fresh = RouterDepthState()
        let unchained = router.logits(u, tokens: tokens, layer: 1, state: &fresh)
        #expect(zip(chained.scalars, unchained.scalars).contains { abs($0 - $1) > 1e-4 })
        // h_1 = GRUCell(P_1 u, h_0), against a plain scalar reference of PyTorch's GRUCell.
        let expected = Self.referenceGRU(router.namedParameters, layer: 1, u: u, h: afterLayer0)
        #expect(zip(state.hidden!.scalars, expected).allSatisfy { abs($0 - $1) < 1e-5 })

        // Tokens in one batch do not see each other: each row equals that token run alone.
        for t in 0..<3 {
            var single = RouterDepthState()
            let row = Tensor(shape: [1, u.cols], scalars: Array(u.row(t)))
            let alone0 = router.logits(row, tokens: [tokens[t]], layer: 0, state: &single)
            let alone1 = router.logits(row, tokens: [tokens[t]], layer: 1, state: &single)
            #expect(zip(alone1.scalars, chained.row(t)).allSatisfy { abs($0 - $1) < 1e-6 })
            _ = alone0
        }

        // In decoding, a token's layer-0 state is computed from h_0 = 0, whatever came before.
        var cache = model.makeCache()
        _ = try model.forward([5, 6, 7], cache: &cache)
        let late = try model.forward([9], cache: &cache).routing[0]
        let p = model.config.gruHiddenSize
        let laterHidden = try #require(late.layers[0].gruHidden)
        // Recompute layer 0's u for token 9 at position 3 via a full pass, then apply the cell to zeros.
        let full = try model.forward([5, 6, 7, 9]).routing[3]
        #expect(zip(full.layers[0].gruHidden!, laterHidden).allSatisfy { abs($0 - $1) < 1e-5 })
        #expect(laterHidden.count == p)
    }
}

@Suite struct ModelTests {
    @Test(arguments: RouterKind.allCases)
    func incrementalDecodingEqualsFullSequence(router: RouterKind) throws {
        let model = try RouterTests.model(router, seed: 11)
        let tokens = RouterTests.tokens
        let full = try model.forward(tokens)
        var cache = model.makeCache()
        // Mix chunk sizes: one prompt chunk, then token by token.
        var incremental: [RoutingTrace] = []
        var logits: [Float] = []
        for chunk in [Array(tokens[0..<3])] + tokens[3...].map({ [$0] }) {
            let step = try model.forward(chunk, cache: &cache)
            incremental += step.routing
            logits += step.logits.scalars
        }
        #expect(cache.length == tokens.count)
        #expect(zip(full.logits.scalars, logits).allSatisfy { abs($0 - $1) < 1e-5 })
        for (a, b) in zip(full.routing, incremental) {
            #expect(a.position == b.position && a.token == b.token)
            for (x, y) in zip(a.layers, b.layers) {
                #expect(x.experts == y.experts)
                #expect(zip(x.probabilities, y.probabilities).allSatisfy { abs($0 - $1) < 1e-5 })
                #expect(zip(x.logits, y.logits).allSatisfy { $0 == $1 || abs($0 - $1) < 1e-5 })
                #expect(zip(x.weights, y.weights).allSatisfy { abs($0 - $1) < 1e-5 })
                #expect(zip(x.expertOutputNorms, y.expertOutputNorms).allSatisfy { abs($0 - $1) < 1e-5 })
                if let hx = x.gruHidden, let hy = y.gruHidden { #expect(zip(hx, hy).allSatisfy { abs($0 - $1) < 1e-5 }) }
            }
        }
    }

    /// Independent sequences run as one batch route each token as the sequence's own forward
    /// pass does (to rounding: an expert that gets fewer than six rows of one sequence sums in
    /// another order than the same expert's batch), and the last logits are its last row's.
    @Test(arguments: [RouterKind.gru, .hash, .hybrid])
    func sequencesBatchedEqualEachOnItsOwn(router: RouterKind) throws {
        let model = try RouterTests.model(router, seed: 11)
        let sequences = [RouterTests.tokens, Array(RouterTests.tokens.reversed().prefix(7)), [5], Array(RouterTests.tokens.prefix(4))]
        let batched = try model.forward(sequences: sequences, recordGRUState: true)
        #expect(batched.count == sequences.count)
        for (sequence, (routing, lastLogits)) in zip(sequences, batched) {
            let alone = try model.forward(sequence)
            #expect(zip(alone.logits.row(sequence.count - 1), lastLogits).allSatisfy { abs($0 - $1) < 1e-5 })
            #expect(routing.map(\.position) == Array(0..<sequence.count) && routing.map(\.token) == sequence)
            for (a, b) in zip(alone.routing, routing) {
                for (x, y) in zip(a.layers, b.layers) {
                    #expect(x.experts == y.experts)
                    #expect(zip(x.probabilities, y.probabilities).allSatisfy { abs($0 - $1) < 1e-5 })
                    #expect(zip(x.expertOutputNorms, y.expertOutputNorms).allSatisfy { abs($0 - $1) < 1e-5 })
                    #expect((x.gruHidden == nil) == (y.gruHidden == nil))
                }
            }
        }
        #expect(throws: InferenceError.emptyInput) { try model.forward(sequences: [[1], []]) }
        let noState = try model.forward(sequences: sequences, recordGRUState: false)
        #expect(noState.allSatisfy { $0.routing.allSatisfy { $0.layers.allSatisfy { $0.gruHidden == nil } } })
    }

    /// Freeing a model's packed copies (the explorer does when it leaves a model) frees them for
    /// every copy of a parameter, and the next product packs them again: decoding on, after a
    /// release, gives the bits it gives without one.
    /// The GRU's decode weights (its own packed copies) are released too.
    @Test(arguments: [RouterKind.hybrid, .gru])
    func releasedPackedCopiesAreRebuiltWithTheSameResults(router: RouterKind) throws {
        let model = try RouterTests.model(router, seed: 5)
        let copy = model.layers[0].attention.query.weight
        let packed = copy.rowsPacked
        #expect(copy.rowsPacked === packed)
        if let gru = model.router as? GRURouter {
            var cache = model.makeCache()
            _ = try model.forward([RouterTests.tokens[0]], cache: &cache)  // gathers the decode weights
            weak var weights = gru.decodeWeightsIfBuilt
            #expect(weights != nil)
            model.releaseInferenceCopies()
            #expect(weights == nil, "the GRU's decode weights outlived the release")
        }
        func decode(releasingAfter release: Int?) throws -> [UInt32] {
            var cache = model.makeCache()
            var bits: [UInt32] = []
            for (i, token) in RouterTests.tokens.enumerated() {
                bits += try model.forward([token], cache: &cache).logits.scalars.map(\.bitPattern)
                if i == release { model.releaseInferenceCopies() }
            }
            return bits
        }
        let kept = try decode(releasingAfter: nil)
        #expect(try decode(releasingAfter: 4) == kept)
        #expect(model.layers[0].attention.query.weight.rowsPacked !== packed)
        #expect(copy.rowsPacked === model.layers[0].attention.query.weight.rowsPacked)
    }

    @Test func sameSeedSameModelDifferentSeedDifferentModel() throws {
        let a = try MoEModel(config: .tiny(), seed: 3)
        let b = try MoEModel(config: .tiny(), seed: 3)
        let c = try MoEModel(config: .tiny(), seed: 4)
        #expect(a.namedParameters == b.namedParameters)
        #expect(a.namedParameters != c.namedParameters)
        #expect(try a.forward([1, 2, 3]).logits == b.forward([1, 2, 3]).logits)
    }

    @Test func attentionIsCausal() throws {
        let model = try RouterTests.model(.linear)
        let a = try model.forward([10, 20, 30, 40])
        let b = try model.forward([10, 20, 30, 99])
        #expect(a.logits.row(2) == b.logits.row(2))
        #expect(a.logits.row(3) != b.logits.row(3))
    }

    @Test func contextAndVocabularyLimitsAreErrorsNotCrashes() throws {
        let model = try RouterTests.model(.linear)
        let tooLong = [Int](repeating: 1, count: model.config.contextLength + 1)
        #expect(throws: InferenceError.contextFull(needed: tooLong.count, capacity: model.config.contextLength)) {
            try model.forward(tooLong)
        }
        #expect(throws: InferenceError.tokenOutOfRange(token: 300, vocabSize: 300)) { try model.forward([1, 300]) }
        // The rule the commands apply to a whole text is the one the model applies per pass.
        #expect(throws: InferenceError.emptyInput) { try InferenceError.check(count: 0, capacity: 8) }
        #expect(throws: InferenceError.contextFull(needed: 9, capacity: 8)) { try InferenceError.check(count: 3, after: 6, capacity: 8) }
        #expect(throws: Never.self) { try InferenceError.check(count: 1_000_000) }
    }

    @Test(arguments: [RouterKind.gru, .hybrid, .attention])
    func checkpointRoundTripGivesTheSameModel(router: RouterKind) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("moescope-ckpt-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var config = ModelConfig.tiny(router: router)
        config.tieEmbeddings = router != .gru
        let model = try MoEModel(config: config, seed: 21)
        let tokenizer = Tokenizer(merges: [.init(104, 101)])
        try Checkpoint(model: model, tokenizer: tokenizer).save(to: directory)
        let loaded = try Checkpoint.load(from: directory)
        #expect(loaded.model.config == config)
        #expect(loaded.tokenizer == tokenizer)
        #expect(loaded.model.namedParameters == model.namedParameters)
        #expect(try loaded.model.forward([1, 2, 3]).logits == model.forward([1, 2, 3]).logits)
    }

    /// The shipped layout: `<router>/` is seed 1 and `<router>/seed-N/` the other seeds; `compare`
    /// must find all of them in seed order, once each, and ignore folders that are not seeds.
    @Test func seedCheckpointsFindTheShippedSeedAndItsSeedFolders() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("moescope-seeds-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let model = try MoEModel(config: .tiny(router: .linear), seed: 1)
        func save(_ path: String, seed: String?) throws {
            try Checkpoint(model: model, tokenizer: Tokenizer(merges: [])).save(to: path, metadata: seed.map { ["seed": $0] } ?? [:])
        }
        let shipped = "\(root)/linear"
        try save(shipped, seed: "1")
        try save("\(shipped)/seed-3", seed: "3")
        try save("\(shipped)/seed-2", seed: "2")
        try save("\(shipped)/seed-1", seed: "1")  // the shipped seed again: counted once
        try save("\(shipped)/seed-02", seed: "2")  // not a seed folder's name
        try save("\(shipped)/seed-x", seed: nil)
        try FileManager.default.createDirectory(atPath: "\(shipped)/seed-4", withIntermediateDirectories: true)  // no checkpoint
        let found = Checkpoint.seedCheckpoints(in: shipped)
        #expect(found.map(\.name) == ["seed-1", "seed-2", "seed-3"])
        #expect(found.map(\.path) == [shipped, "\(shipped)/seed-2", "\(shipped)/seed-3"])

        // Only seed folders (runs/retrain/<router>): the folder itself is no checkpoint.
        let runs = "\(root)/runs"
        try save("\(runs)/seed-2", seed: "2")
        try save("\(runs)/seed-1", seed: "1")
        #expect(Checkpoint.seedCheckpoints(in: runs).map(\.name) == ["seed-1", "seed-2"])

        // A checkpoint whose weights record no seed keeps its folder name and comes first.
        let plain = "\(root)/plain"
        try save(plain, seed: nil)
        try save("\(plain)/seed-1", seed: "1")
        #expect(Checkpoint.seedCheckpoints(in: plain).map(\.name) == ["plain", "seed-1"])
        #expect(Checkpoint.seedCheckpoints(in: "\(root)/missing").isEmpty)
    }

    /// Loading, saving and training walk one declaration: a model asks its source for exactly
    /// the parameters it declares, each once, in declaration order (the seeded draw order), and
    /// `namedParameters`, what a checkpoint stores, holds the same names.
    @Test(arguments: RouterKind.allCases)
    func loadingAsksForExactlyTheDeclaredParameters(router: RouterKind) throws {
        struct Recording: WeightSource {
            var drawn = RandomWeights(seed: 3)
            var asked: [String] = []
            mutating func tensor(_ name: String, shape: [Int], initializer: Initializer) throws -> Tensor {
                asked.append(name)
                return try drawn.tensor(name, shape: shape, initializer: initializer)
            }
        }
        var config = ModelConfig.tiny(router: router)
        config.tieEmbeddings = router != .gru
        var source = Recording()
        let model = try MoEModel(config: config, from: &source)
        #expect(source.asked == model.declaredParameters.map(\.name))
        #expect(Set(source.asked).count == source.asked.count)
        #expect(Set(model.namedParameters.keys) == Set(source.asked))
        #expect(config.tieEmbeddings != source.asked.contains("lm_head.weight"))
        #expect(model.namedParameters == (try MoEModel(config: config, seed: 3)).namedParameters)
    }

    @Test func checkpointWithAnotherRoutersWeightsNamesTheMissingTensor() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("moescope-ckpt-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Checkpoint(model: try MoEModel(config: .tiny(router: .linear), seed: 1), tokenizer: Tokenizer(merges: [])).save(to: directory)
        var config = try ModelConfig.load(path: "\(directory)/config.json")
        config.router = .mlp
        try config.encoded().write(to: URL(fileURLWithPath: "\(directory)/config.json"))
        #expect(
            throws: CheckpointError.missingTensor(
                path: "\(directory)/model.safetensors", tensor: "model.layers.0.block_sparse_moe.gate.fc1.weight")
        ) {
            try Checkpoint.load(from: directory)
        }
        config.router = .linear
        config.hiddenSize = 64
        try config.encoded().write(to: URL(fileURLWithPath: "\(directory)/config.json"))
        #expect(
            throws: CheckpointError.wrongShape(
                path: "\(directory)/model.safetensors", tensor: "model.embed_tokens.weight",
                expected: [300, 64], found: [300, 32])
        ) {
            try Checkpoint.load(from: directory)
        }
    }

    @Test func badConfigsNameTheField() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID()).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        var config = ModelConfig.tiny()
        config.numHeads = 5
        try config.encoded().write(to: URL(fileURLWithPath: path))
        #expect { try ModelConfig.load(path: path) } throws: { "\($0)".contains("num_attention_heads") }
        try Data(#"{"vocab_size": 300}"#.utf8).write(to: URL(fileURLWithPath: path))
        #expect { try ModelConfig.load(path: path) } throws: { "\($0)".contains("missing field hidden_size") }
        try Data(
            #"{"vocab_size": 300, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8, "num_local_experts": 4, "num_experts_per_tok": 2, "max_position_embeddings": 8, "router_type": "banana"}"#
                .utf8
        ).write(to: URL(fileURLWithPath: path))
        #expect { try ModelConfig.load(path: path) } throws: { "\($0)".contains("router_type") }
    }
}

/// The flat routing table against routing one row at a time (`SparseMoE.route`, the plain
/// reference: softmax, then `topK`, then the weights), on rows with ties and −∞ logits.
@Suite struct RoutingTableTests {
    @Test(arguments: [true, false]) func softmaxTopKTableEqualsRowByRowRouting(normalize: Bool) {
        var g = SeededGenerator(seed: 11)
        let (rows, e, k) = (40, 8, 3)
        var scalars = (0..<rows * e).map { _ in g.nextNormal() * 2 }
        for e0 in 0..<e { scalars[e0] = 0.5 }  // a row of ties: lower index first
        for e0 in stride(from: 0, to: e, by: 2) { scalars[e + e0] = -.infinity }  // the Hash router's form
        let logits = Tensor(shape: [rows, e], scalars: scalars)
        let block = SparseMoE<Linear>(experts: [], topK: k, rule: .softmaxTopK(normalize: normalize))
        let table = block.routingTable(logits: logits)
        for r in 0..<rows {
            let reference = block.route(Array(logits.row(r)), rule: block.rule, k: k)
            #expect(table.experts[r * k..<(r + 1) * k].map { Int($0) } == reference.experts)
            #expect(Array(table.weights[r * k..<(r + 1) * k]) == reference.weights)
            #expect(Array(table.probabilities[r * e..<(r + 1) * e]) == reference.probabilities)
            let entry = table.layerRouting(r, logits: logits)
            #expect(table.selectionMargin(r) == entry.selectionMargin)
        }
        #expect(table.experts[0..<k] == [0, 1, 2])
    }
}
