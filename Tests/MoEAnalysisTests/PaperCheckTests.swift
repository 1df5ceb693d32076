import Foundation
import MoECore
import Testing

@testable import MoEAnalysis

@Suite struct PaperCheckTests {
    /// One layer's routing with the given top-k experts (probabilities peaked on them, in order).
    static func layer(_ experts: [Int], of numExperts: Int, probabilities: [Float]? = nil) -> LayerRouting {
        var p = probabilities ?? [Float](repeating: 0.01, count: numExperts)
        if probabilities == nil {
            for (rank, e) in experts.enumerated() { p[e] = 0.5 - Float(rank) * 0.1 }
            let total = p.reduce(0, +)
            p = p.map { $0 / total }
        }
        return LayerRouting(
            logits: p.map { log($0) }, probabilities: p, experts: experts,
            weights: experts.map { _ in 1 / Float(experts.count) }, expertOutputNorms: experts.map { _ in 1 },
            gruHidden: nil, routerNanoseconds: 0)
    }

    static func trace(_ token: Int, _ position: Int, _ layers: [[Int]], experts: Int) -> RoutingTrace {
        RoutingTrace(token: token, position: position, layers: layers.map { layer($0, of: experts) })
    }

    /// The consecutive-token counts of texts, each its own domain, per layer.
    static func repetition(_ texts: [[RoutingTrace]], layerCount: Int, experts: Int) -> [[(first: Int, overlap: Int, pairs: Int)]] {
        let k = texts[0][0].layers[0].experts.count
        var counts = RoutingCounts(numExperts: experts, topK: k, layerCount: layerCount, expectedTokens: 0)
        for (i, text) in texts.enumerated() { counts.add(text, domain: "text \(i)") }
        return counts.domains.map { d in (0..<layerCount).map { (d.sameFirstChoice[$0], d.overlapping[$0], d.pairs[$0]) } }
    }

    static func counts(_ traces: [RoutingTrace], experts: Int, layerCount: Int = 1) -> RoutingCounts {
        var counts = RoutingCounts(numExperts: experts, topK: traces[0].layers[0].experts.count, layerCount: layerCount, expectedTokens: 0)
        counts.add(traces, domain: "text")
        return counts
    }

    @Test func everyTokenRepeatingItsExpertsRepeatsFully() {
        let traces = (0..<50).map { Self.trace($0 % 7, $0, [[3, 1], [2, 5]], experts: 8) }
        let counts = Self.repetition([traces], layerCount: 2, experts: 8)[0]
        #expect(counts.map(\.pairs) == [49, 49])
        #expect(counts.map(\.first) == [49, 49])
        #expect(counts.map(\.overlap) == [49, 49])
    }

    @Test func pairsNeverStraddleWindows() {
        // Positions restart at 0 where a new context window begins: that pair is not consecutive.
        let traces = [
            Self.trace(1, 0, [[0, 1]], experts: 4), Self.trace(1, 1, [[0, 1]], experts: 4),
            Self.trace(1, 0, [[2, 3]], experts: 4), Self.trace(1, 1, [[3, 0]], experts: 4),
        ]
        let counts = Self.repetition([traces], layerCount: 1, experts: 4)[0]
        #expect(counts[0].pairs == 2)
        #expect(counts[0].first == 1)  // (0,1)→(0,1) repeats; (2,3)→(3,0) does not
        #expect(counts[0].overlap == 2)  // both share an expert
    }

    @Test func independentUniformRoutingRepeatsAtTheRandomBaseline() {
        var rng = SeededGenerator(seed: 11)
        for (experts, k) in [(8, 2), (64, 8)] {
            let traces = (0..<20_000).map { position -> RoutingTrace in
                var chosen: [Int] = []
                while chosen.count < k {
                    let e = Int(rng.next() % UInt64(experts))
                    if !chosen.contains(e) { chosen.append(e) }
                }
                return Self.trace(0, position, [chosen], experts: experts)
            }
            let c = Self.repetition([traces], layerCount: 1, experts: experts)[0][0]
            let first = Double(c.first) / Double(c.pairs)
            let overlap = Double(c.overlap) / Double(c.pairs)
            #expect(abs(first - 1 / Double(experts)) < 0.01)
            #expect(abs(overlap - ConsecutiveRepetitionCheck.randomOverlap(experts: experts, k: k)) < 0.015)
        }
        #expect(abs(ConsecutiveRepetitionCheck.randomOverlap(experts: 8, k: 2) - (1 - 15.0 / 28)) < 1e-12)  // Mixtral's ≈ 46 %
        #expect(ConsecutiveRepetitionCheck.randomOverlap(experts: 4, k: 3) == 1)  // two 3-sets of 4 always meet
    }

    @Test func repetitionCarriesTheLastTokenAcrossBatches() {
        // One text of 10 consecutive positions, handed over as 3 + 7: the pair (2, 3) straddles
        // the batches and still counts; a new domain starts a new text.
        let traces = (0..<10).map { Self.trace(1, $0, [[0, 1]], experts: 4) }
        var counts = RoutingCounts(numExperts: 4, topK: 2, layerCount: 1, expectedTokens: 20)
        counts.add(Array(traces[..<3]), domain: "a")
        counts.add(Array(traces[..<4]), domain: "b")
        counts.add(Array(traces[3...]), domain: "a")  // "a" continues across another domain's block
        #expect(counts.domains.map(\.domain) == ["a", "b"])
        #expect(counts.domains.map { $0.pairs[0] } == [9, 3])
    }

    /// The checks gathered in batches of any size equal the checks of the whole texts, at a
    /// real model's shape (64 experts, top-8, 16 routed layers of 20), and RMoE's estimator
    /// subsamples every stride-th token of the whole text across batches and domains.
    @Test func checksGatheredInBatchesEqualTheWholeTexts() throws {
        let model = SyntheticModel(numExperts: 64, topK: 8, routedLayers: Array(4..<20), hasWeights: false)
        let domains = ["prose", "code", "numbers"].enumerated().map { i, name in
            (domain: name, traces: model.traces(tokens: 150 + 40 * i, seed: UInt64(i)))
        }
        let tokens = domains.reduce(0) { $0 + $1.traces.count }
        func checks(batch: (Int) -> Int) throws -> [String] {
            var counts = RoutingCounts(numExperts: 64, topK: 8, layerCount: 16, expectedTokens: tokens)
            for (domain, traces) in domains {
                var start = 0
                var call = 0
                while start < traces.count {
                    let end = min(traces.count, start + batch(call))
                    counts.add(Array(traces[start..<end]), domain: domain)
                    (start, call) = (end, call + 1)
                }
            }
            let layers = Array(repeating: 0.5, count: 16)
            let result = PaperChecks(
                counts: counts, routedLayers: model.routedLayers, innerBalance: layers, outerBalance: layers,
                topOneMutualInformation: Array(repeating: layers, count: 16))
            #expect(result.olmoeCoActivation.allPairsMatrices.count == 16)
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            func json(_ value: some Encodable) throws -> String { String(decoding: try encoder.encode(value), as: UTF8.self) }
            return [
                try json(result.mixtralRepetition), try json(result.olmoeCoActivation), try json(result.olmoeVocabularySpecialisation),
                try json(result.olmoeDomainSpecialisation), try json(result.rmoeMutualInformation),
            ]
        }
        let whole = try checks { _ in .max }
        for sizes in [{ (_: Int) in 1 }, { 1 + ($0 * 37) % 64 }] {
            for (check, (batched, all)) in zip(
                ["repetition", "co-activation", "vocabulary", "domain", "mutual information"], zip(try checks(batch: sizes), whole))
            {
                #expect(batched == all, "\(check)")
            }
        }
        // The repetition counts, token by token, equal those of each whole text.
        var counts = RoutingCounts(numExperts: 64, topK: 8, layerCount: 16, expectedTokens: tokens)
        for (domain, traces) in domains { for t in traces { counts.add([t], domain: domain) } }
        let wholeTexts = Self.repetition(domains.map(\.traces), layerCount: 16, experts: 64)
        for i in domains.indices {
            #expect(counts.domains[i].pairs == wholeTexts[i].map(\.pairs))
            #expect(counts.domains[i].sameFirstChoice == wholeTexts[i].map(\.first))
        }
        var sums = RMoEMutualInformationCheck.Sums(
            layerCount: 16, numExperts: 64, expectedTokens: tokens, workBudget: tokens * 16 * 16 * 64 / 3)
        for (_, traces) in domains { sums.add(RoutingBlock(traces: traces, layerCount: 16, topK: 8, numExperts: 64)) }
        #expect(sums.stride == 3 && sums.tokensUsed == (tokens + 2) / 3)
        let every3rd = domains.flatMap(\.traces).enumerated().filter { $0.offset % 3 == 0 }.map(\.element)
        #expect(sums.matrix == RMoEMutualInformationCheck.matrix(every3rd, layerCount: 16, bins: 10))
    }

    @Test func coActivationBothDefinitionsByHand() {
        // Token A chose [0, 1, 2], token B chose [0, 3, 1] (most probable first).
        let traces = [Self.trace(0, 0, [[0, 1, 2]], experts: 4), Self.trace(0, 1, [[0, 3, 1]], experts: 4)]
        let all = CoActivationCheck.matrix(traces, layer: 0, numExperts: 4, form: .allPairs)
        #expect(all[0] == [0, 1, 0.5, 0.5])  // E0 chosen twice: with E1 twice, E2 once, E3 once
        #expect(all[2] == [1, 1, 0, 0])  // E2 chosen once, with E0 and E1
        let adjacent = CoActivationCheck.matrix(traces, layer: 0, numExperts: 4, form: .adjacentPairs)
        // Adjacent pairs: A has (0,1), (1,2); B has (0,3), (3,1) — counted both ways, over the row expert's count.
        #expect(adjacent[0] == [0, 0.5, 0, 0.5])
        #expect(adjacent[1] == [0.5, 0, 0.5, 0.5])
        #expect(adjacent[2] == [0, 1, 0, 0])
        let check = CoActivationCheck(counts: Self.counts(traces, experts: 4), routedLayers: [0])
        #expect(check.layers[0].topAllPairs.first == ExpertPair(expert: 0, with: 1, rate: 1))
        #expect(abs(check.layers[0].meanStrongestAllPairs - (1 + 1 + 1 + 1) / 4) < 1e-12)  // every expert has a sure partner
        #expect(abs(check.layers[0].meanStrongestAdjacentPairs - (0.5 + 0.5 + 1 + 1) / 4) < 1e-12)
        #expect(abs(check.randomAllPairs - 2.0 / 3) < 1e-12)
        #expect(abs(check.randomAdjacentPairs - 2.0 * 2 / (3 * 3)) < 1e-12)
    }

    @Test func vocabularySpecialisationByHand() {
        // Token 7 three times with first choices 0, 0, 1; token 9 once.
        let traces = [
            Self.trace(7, 0, [[0, 2]], experts: 4), Self.trace(7, 1, [[0, 3]], experts: 4),
            Self.trace(7, 2, [[1, 2]], experts: 4), Self.trace(9, 3, [[3, 2]], experts: 4),
        ]
        let counts = Self.counts(traces, experts: 4).tokenExperts
        let top1 = counts.specialisation(layer: 0, topK: false, minimumOccurrences: 1)
        #expect(abs(top1.mean - (2.0 / 3 + 1) / 2) < 1e-12 && top1.tokens == 2)
        let frequent = counts.specialisation(layer: 0, topK: false, minimumOccurrences: 2)
        #expect(abs(frequent.mean - 2.0 / 3) < 1e-12 && frequent.tokens == 1)
        // Top-2: token 7 has expert 2 in 2 of 3 sets, expert 0 in 2 of 3 → 2/3; token 9 → 1.
        let top2 = counts.specialisation(layer: 0, topK: true, minimumOccurrences: 1)
        #expect(abs(top2.mean - (2.0 / 3 + 1) / 2) < 1e-12)
    }

    @Test func domainSpecialisationByHand() {
        // "code": both tokens use E0 and E1; "prose": one token E1+E2, one E2+E0.
        let code = [Self.trace(1, 0, [[0, 1]], experts: 4), Self.trace(1, 1, [[1, 0]], experts: 4)]
        let prose = [Self.trace(2, 0, [[1, 2]], experts: 4), Self.trace(2, 1, [[2, 0]], experts: 4)]
        var counts = RoutingCounts(numExperts: 4, topK: 2, layerCount: 1, expectedTokens: 4)
        counts.add(code, domain: "code")
        counts.add(prose, domain: "prose")
        let check = DomainSpecialisationCheck(counts: counts, routedLayers: [4])
        let first = check.domains[0].layers[0]
        let second = check.domains[1].layers[0]
        #expect(first.expert == 0 && first.specialisation == 1 && first.layer == 4)  // every code token uses E0 (tie with E1: lower id)
        #expect(second.expert == 2 && second.specialisation == 1)  // every prose token uses E2
        #expect(first.baseline == 0.5)  // k/E
    }

    @Test func perTokenMutualInformationOfBinnedProbabilities() {
        // Identical vectors whose 4 probabilities fall in 4 different bins: MI = ln 4. A flat
        // vector (all in one bin) shares nothing with anything: MI = 0.
        let spread: [Float] = [0.05, 0.15, 0.25, 0.55]
        let flat: [Float] = [0.25, 0.25, 0.25, 0.25]
        let trace = RoutingTrace(
            token: 0, position: 0,
            layers: [
                Self.layer([3, 2], of: 4, probabilities: spread), Self.layer([3, 2], of: 4, probabilities: spread),
                Self.layer([0, 1], of: 4, probabilities: flat),
            ])
        let m = RMoEMutualInformationCheck.matrix([trace, trace], layerCount: 3, bins: 10)
        #expect(abs(m[0][1] - log(4)) < 1e-9 && abs(m[1][0] - log(4)) < 1e-9)
        #expect(abs(m[0][2]) < 1e-12 && abs(m[2][2]) < 1e-12)
    }

    @Test func selectionMarginIsKthMinusNextScore() {
        #expect(abs(Self.layer([0, 1], of: 4, probabilities: [0.4, 0.3, 0.2, 0.1]).selectionMargin! - 0.1) < 1e-6)
        #expect(Self.layer([1, 3], of: 4, probabilities: [0, 0.5, 0, 0.5]).selectionMargin == 0.5)  // Hash: 1/k vs 0
        #expect(Self.layer([0, 1], of: 2, probabilities: [0.6, 0.4]).selectionMargin == nil)  // every expert chosen
        // A rule other than the score chose (e.g. a group limit): negative margin.
        #expect(Self.layer([0, 3], of: 4, probabilities: [0.4, 0.3, 0.2, 0.1]).selectionMargin! < 0)
    }

    @Test func rankHistogramIsDiagonalWhenTheGateFollowsNorms() {
        var routing = Self.layer([3, 2], of: 4, probabilities: [0.1, 0.2, 0.3, 0.4])
        routing.allExpertOutputNorms = [1, 2, 3, 4]
        let preference = NormPreference(traces: [RoutingTrace(token: 0, position: 0, layers: [routing])])
        #expect(preference.rankHistogram[0] == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    }

    @Test func mixtralTableIsTheirsAndItsRanges() {
        let table = MixtralTable5()
        #expect(table.domains.count == 8 && table.domains.allSatisfy { $0.firstChoice.count == 3 && $0.firstOrSecondChoice.count == 3 })
        #expect(table.firstChoiceRange[0] == 0.136...0.149)
        #expect(table.firstOrSecondRange[1] == 0.616...0.670)
    }
}
