import Foundation
import MoECore

/// Everything `analyze` measures that can be counted a block of tokens at a time, from live
/// routing and recorded traces alike (`RoutingBlock`): expert load, co-activation, per-domain
/// load and consecutive-token repetition, every token's top-1 choice (for the L × L mutual
/// information), token × expert counts (top tokens, vocabulary specialisation), and — where
/// the routing has scores — entropy, selection margins, Inner/Outer Balance and RMoE's
/// per-token mutual information. Tables are flat and a block's layers are counted side by
/// side on the cores (each thread owns whole layers), so a recorded trace streams at the speed
/// of its expert ids. Memory: O(L · E²) for the tables, 2 bytes per token and layer for the
/// top-1 sequences, and the token × expert counts up to `TokenExpertCounts.maxDistinctTokens`.
public struct RoutingCounts: Sendable {
    public let numExperts: Int
    public let topK: Int
    public let layerCount: Int
    public private(set) var tokens = 0
    /// [L × E] routed slots per expert (also tokens per expert: a token's experts differ).
    public private(set) var load: [Int]
    /// [L × E × E] tokens whose top-k set holds both i and j, at [i · E + j] with i < j.
    private var allPairs: [Int32]
    /// [L × E × E] the same for neighbours in the top-k list (OLMoE's released counting), i < j.
    private var adjacentPairs: [Int32]
    /// [T × L] every token's top-1 expert.
    private var topOne: [UInt16] = []
    public private(set) var domains: [DomainCounts] = []
    private var domainIndex: [String: Int] = [:]
    /// Per layer: entropy (nats), selection margin, ln(top-1 / top-2 score) and summed top-k
    /// score of every token; empty until a block with scores arrives.
    public private(set) var entropy: [QuantileSketch] = []
    public private(set) var margin: [QuantileSketch] = []
    public private(set) var logTopRatio: [QuantileSketch] = []
    public private(set) var topKMass: [QuantileSketch] = []
    public private(set) var tokenExperts: TokenExpertCounts
    public private(set) var perTokenMutualInformation: RMoEMutualInformationCheck.Sums

    /// One domain's tokens: its load, and how often consecutive tokens repeat their routing.
    public struct DomainCounts: Sendable {
        public let domain: String
        public fileprivate(set) var tokens = 0
        /// [L × E]
        public fileprivate(set) var load: [Int]
        /// [L] consecutive pairs, pairs with the same first choice, pairs whose top-k sets overlap.
        public fileprivate(set) var pairs: [Int]
        public fileprivate(set) var sameFirstChoice: [Int]
        public fileprivate(set) var overlapping: [Int]
        /// The last token counted: its position and [L × k] experts (pairs with the next block's first).
        fileprivate var lastPosition: Int?
        fileprivate var lastExperts: [Int32]

        init(domain: String, layers: Int, experts: Int, topK: Int) {
            self.domain = domain
            load = Array(repeating: 0, count: layers * experts)
            pairs = Array(repeating: 0, count: layers)
            sameFirstChoice = pairs
            overlapping = pairs
            lastExperts = Array(repeating: 0, count: layers * topK)
        }
    }

    /// `expectedTokens`: how many tokens will be added in all (RMoE's per-token estimator picks
    /// its subsampling stride from it).
    public init(numExperts: Int, topK: Int, layerCount: Int, expectedTokens: Int) {
        self.numExperts = numExperts
        self.topK = topK
        self.layerCount = layerCount
        load = Array(repeating: 0, count: layerCount * numExperts)
        allPairs = Array(repeating: 0, count: layerCount * numExperts * numExperts)
        adjacentPairs = allPairs
        tokenExperts = TokenExpertCounts(layerCount: layerCount, numExperts: numExperts, expectedTokens: expectedTokens)
        // The top-1 sequences grow by L entries a token: room for the expected tokens at once.
        topOne.reserveCapacity(min(expectedTokens, MemoryBudget.availableBytes / 8 / max(1, 2 * layerCount)) * layerCount)
        perTokenMutualInformation = RMoEMutualInformationCheck.Sums(
            layerCount: layerCount, numExperts: numExperts, expectedTokens: expectedTokens)
    }

    /// Bytes the tables take before any token, and per token (checked against the memory
    /// budget before a trace is streamed).
    public static func workingBytes(numExperts: Int, layers: Int) -> (fixed: Int?, perToken: Int?) {
        (MemoryBudget.product([2 * layers, numExperts, numExperts, 4]), MemoryBudget.product([layers, 2]))
    }

    public var hasScores: Bool { !entropy.isEmpty }

    /// A live model's routing, `traces` in text order (see `add(_:domain:)` for blocks).
    public mutating func add(_ traces: [RoutingTrace], domain: String) {
        add(RoutingBlock(traces: traces, layerCount: layerCount, topK: topK, numExperts: numExperts), domain: domain)
    }

    /// `block` follows on from the previous block of the same domain in text order (a token
    /// pair can straddle the two); another domain's blocks may come between.
    public mutating func add(_ block: RoutingBlock, domain: String) {
        precondition(block.layerCount == layerCount && block.topK == topK && block.numExperts == numExperts)
        let n = block.count
        guard n > 0 else { return }
        let (l, k, e) = (layerCount, topK, numExperts)
        if domainIndex[domain] == nil {
            domainIndex[domain] = domains.count
            domains.append(DomainCounts(domain: domain, layers: l, experts: e, topK: k))
        }
        let d = domainIndex[domain]!
        let dense = tokenExperts.register(block.tokens)
        let firstRow = tokens
        topOne.append(contentsOf: repeatElement(0, count: n * l))
        let previousPosition = domains[d].lastPosition
        let last = domains[d].lastExperts
        // The tables move out of `self` while the layer threads write them through pointers.
        var (layerLoads, all, adjacent, sequences) = (load, allPairs, adjacentPairs, topOne)
        (load, allPairs, adjacentPairs, topOne) = ([], [], [], [])
        var domainLoads = domains[d].load
        domains[d].load = []
        var repeats = [Int](repeating: 0, count: 3 * l)
        let positions = block.positions
        func countLayers(_ tables: LayerTables) {
            block.experts.withUnsafeBufferPointer { chosenBuffer in
                last.withUnsafeBufferPointer { lastBuffer in
                    let chosen = chosenBuffer.baseAddress!
                    // Threads take whole layers: no two write the same entry.
                    Kernels.parallelFor(l) { layer in
                        let layerLoad = tables.load + layer * e
                        let domainLoad = tables.domainLoad + layer * e
                        let layerAll = tables.all + layer * e * e
                        let layerAdjacent = tables.adjacent + layer * e * e
                        var (pairs, sameFirst, overlapping) = (0, 0, 0)
                        for t in 0..<n {
                            let row = chosen + (t * l + layer) * k
                            CoActivationCheck.count(row, k: k, e: e, load: layerLoad, all: layerAll, adjacent: layerAdjacent)
                            for s in 0..<k { domainLoad[Int(row[s])] += 1 }
                            tables.topOne[(firstRow + t) * l + layer] = UInt16(truncatingIfNeeded: row[0])
                            if dense[t] >= 0 {
                                let base = (Int(dense[t]) * l + layer) * e
                                tables.firstChoice[base + Int(row[0])] += 1
                                for s in 0..<k { tables.inTopK[base + Int(row[s])] += 1 }
                            }
                            let previous: UnsafePointer<Int32>?
                            if t > 0 {
                                previous = positions[t] == positions[t - 1] + 1 ? row - l * k : nil
                            } else {
                                previous =
                                    previousPosition.map { $0 + 1 == positions[0] } == true ? lastBuffer.baseAddress! + layer * k : nil
                            }
                            guard let previous else { continue }
                            pairs += 1
                            if previous[0] == row[0] { sameFirst += 1 }
                            overlap: for a in 0..<k {
                                for b in 0..<k where previous[b] == row[a] {
                                    overlapping += 1
                                    break overlap
                                }
                            }
                        }
                        tables.repeats[3 * layer] += pairs
                        tables.repeats[3 * layer + 1] += sameFirst
                        tables.repeats[3 * layer + 2] += overlapping
                    }
                }
            }
        }
        tokenExperts.withTables { firstChoice, inTopK in
            layerLoads.withUnsafeMutableBufferPointer { loadBuffer in
                all.withUnsafeMutableBufferPointer { allBuffer in
                    adjacent.withUnsafeMutableBufferPointer { adjacentBuffer in
                        sequences.withUnsafeMutableBufferPointer { topOneBuffer in
                            domainLoads.withUnsafeMutableBufferPointer { domainLoadBuffer in
                                repeats.withUnsafeMutableBufferPointer { repeatBuffer in
                                    countLayers(
                                        LayerTables(
                                            load: loadBuffer.baseAddress!, all: allBuffer.baseAddress!,
                                            adjacent: adjacentBuffer.baseAddress!,
                                            topOne: topOneBuffer.baseAddress!, domainLoad: domainLoadBuffer.baseAddress!,
                                            repeats: repeatBuffer.baseAddress!, firstChoice: firstChoice, inTopK: inTopK))
                                }
                            }
                        }
                    }
                }
            }
        }
        (load, allPairs, adjacentPairs, topOne) = (layerLoads, all, adjacent, sequences)
        var counts = domains[d]
        domains[d] = DomainCounts(domain: "", layers: 0, experts: 0, topK: 0)  // `counts` is the only copy
        counts.load = domainLoads
        for layer in 0..<l {
            counts.pairs[layer] += repeats[3 * layer]
            counts.sameFirstChoice[layer] += repeats[3 * layer + 1]
            counts.overlapping[layer] += repeats[3 * layer + 2]
        }
        counts.tokens += n
        counts.lastPosition = block.positions[n - 1]
        for i in 0..<(l * k) { counts.lastExperts[i] = block.experts[(n - 1) * l * k + i] }
        domains[d] = counts
        tokens += n
        if let probabilities = block.probabilities {
            addScores(probabilities, margins: block.selectionMargins, experts: block.experts, count: n)
        }
        perTokenMutualInformation.add(block)
    }

    /// Entropy, margin and balance of every token and layer, computed side by side on the
    /// cores, then filed into the per-layer sketches.
    private mutating func addScores(_ probabilities: [Float], margins: [Float]?, experts: [Int32], count n: Int) {
        let (l, k, e) = (layerCount, topK, numExperts)
        if entropy.isEmpty {
            entropy = Array(repeating: QuantileSketch(lower: 0, upper: max(log(Double(e)), 1e-9)), count: l)
            margin = Array(repeating: QuantileSketch(lower: -1, upper: 1), count: l)
            logTopRatio = Array(repeating: QuantileSketch(lower: 0, upper: log(1e6)), count: l)
            topKMass = Array(repeating: QuantileSketch(lower: 0, upper: 1), count: l)
        }
        var rowEntropy = [Double](repeating: 0, count: n * l)
        var rowRatio = [Double](repeating: .nan, count: n * l)
        var rowMass = [Double](repeating: 0, count: n * l)
        probabilities.withUnsafeBufferPointer { p in
            rowEntropy.withUnsafeMutableBufferPointer { h in
                rowRatio.withUnsafeMutableBufferPointer { ratio in
                    rowMass.withUnsafeMutableBufferPointer { mass in
                        Kernels.parallelFor(n * l) { row in
                            let scores = p.baseAddress! + row * e
                            var total = 0.0
                            for i in 0..<e where scores[i] > 0 { total -= Double(scores[i]) * log(Double(scores[i])) }
                            h[row] = total
                            var chosen = 0.0
                            for s in 0..<k { chosen += Double(scores[Int(experts[row * k + s])]) }
                            mass[row] = chosen
                            if k >= 2 {
                                let first = Double(scores[Int(experts[row * k])])
                                let second = Double(scores[Int(experts[row * k + 1])])
                                if second > 0 { ratio[row] = log(first / second) }
                            }
                        }
                    }
                }
            }
        }
        for row in 0..<(n * l) {
            let layer = row % l
            entropy[layer].add(rowEntropy[row])
            topKMass[layer].add(rowMass[row])
            if rowRatio[row].isFinite { logTopRatio[layer].add(rowRatio[row]) }
            if let margins, margins[row].isFinite { margin[layer].add(Double(margins[row])) }
        }
    }

    public func layerLoad(_ layer: Int) -> LoadBalanceStats {
        LoadBalanceStats(counts: Array(load[layer * numExperts..<(layer + 1) * numExperts]))
    }

    /// E × E matrix of P(j | i) at routed layer `layer` (row i, column j; diagonal 0).
    public func coActivation(layer: Int, form: CoActivationCheck.Form) -> [[Double]] {
        let e = numExperts
        let pairs = form == .allPairs ? allPairs : adjacentPairs
        return (0..<e).map { i in
            let chosen = load[layer * e + i]
            return (0..<e).map { j in
                guard i != j, chosen > 0 else { return 0 }
                return Double(pairs[layer * e * e + min(i, j) * e + max(i, j)]) / Double(chosen)
            }
        }
    }

    /// L × L mutual information (nats) between the layers' top-1 choices over every token,
    /// pairs of layers side by side on the cores.
    public var topOneMutualInformation: [[Double]] {
        let l = layerCount
        let t = tokens
        var byLayer = [[UInt16]](repeating: [], count: l)
        for layer in 0..<l { byLayer[layer] = (0..<t).map { topOne[$0 * l + layer] } }
        let pairs = (0..<l).flatMap { i in (i..<l).map { (i, $0) } }
        var values = [Double](repeating: 0, count: pairs.count)
        let e = numExperts
        values.withUnsafeMutableBufferPointer { out in
            Kernels.parallelFor(pairs.count) { index in
                let (i, j) = pairs[index]
                out[index] = Self.mutualInformation(byLayer[i], byLayer[j], categories: e)
            }
        }
        var matrix = [[Double]](repeating: [Double](repeating: 0, count: l), count: l)
        for (index, (i, j)) in pairs.enumerated() {
            matrix[i][j] = values[index]
            matrix[j][i] = values[index]
        }
        return matrix
    }

    /// I(A; B) in nats of two paired sequences over `categories` values, from their joint counts.
    static func mutualInformation(_ a: [UInt16], _ b: [UInt16], categories e: Int) -> Double {
        guard !a.isEmpty else { return 0 }
        var joint = [Int32](repeating: 0, count: e * e)
        var rows = [Int](repeating: 0, count: e)
        var columns = [Int](repeating: 0, count: e)
        for t in a.indices {
            joint[Int(a[t]) * e + Int(b[t])] &+= 1
            rows[Int(a[t])] += 1
            columns[Int(b[t])] += 1
        }
        let n = Double(a.count)
        var total = 0.0
        for i in 0..<e where rows[i] > 0 {
            for j in 0..<e where joint[i * e + j] > 0 {
                let c = Double(joint[i * e + j])
                total += c / n * log(c * n / (Double(rows[i]) * Double(columns[j])))
            }
        }
        return max(0, total)
    }
}

/// The tables one block's layer threads write, as pointers: each thread writes only its own
/// layer's entries. Valid only inside the closures that lent them (`RoutingCounts.add`).
private struct LayerTables: @unchecked Sendable {
    let load: UnsafeMutablePointer<Int>
    let all: UnsafeMutablePointer<Int32>
    let adjacent: UnsafeMutablePointer<Int32>
    let topOne: UnsafeMutablePointer<UInt16>
    let domainLoad: UnsafeMutablePointer<Int>
    let repeats: UnsafeMutablePointer<Int>
    let firstChoice: UnsafeMutablePointer<UInt32>
    let inTopK: UnsafeMutablePointer<UInt32>

}

/// Quantiles of a stream of values in fixed memory: a histogram of `bins` equal bins over
/// [lower, upper] (values outside fall in the end bins) that also sums the values in each bin,
/// so a quantile is the mean of the values in its bin — exact when they are all equal, within
/// a bin's width otherwise.
public struct QuantileSketch: Sendable {
    public let lower: Double
    public let upper: Double
    private var counts: [Int]
    private var sums: [Double]
    public private(set) var count = 0
    public private(set) var sum = 0.0

    public init(lower: Double, upper: Double, bins: Int = 4096) {
        self.lower = lower
        self.upper = upper
        counts = Array(repeating: 0, count: bins)
        sums = Array(repeating: 0, count: bins)
    }

    public mutating func add(_ x: Double) {
        guard x.isFinite else { return }
        let scaled = (x - lower) / (upper - lower) * Double(counts.count)
        let bin = Swift.min(counts.count - 1, Swift.max(0, Int(scaled.rounded(.down))))
        counts[bin] += 1
        sums[bin] += x
        count += 1
        sum += x
    }

    public var mean: Double { count > 0 ? sum / Double(count) : 0 }

    /// The value at rank round(q · (n − 1)) of the sorted stream, to within a bin; 0 when empty.
    public func quantile(_ q: Double) -> Double {
        guard count > 0 else { return 0 }
        let rank = Int(q * Double(count - 1) + 0.5)
        var seen = 0
        for bin in counts.indices where counts[bin] > 0 {
            seen += counts[bin]
            if seen > rank { return sums[bin] / Double(counts[bin]) }
        }
        return upper
    }
}

/// Per token id: occurrences, and at each layer how often each expert was its first choice
/// and in its top-k set — the counts behind the experts' top tokens and OLMoE's vocabulary
/// specialisation. Token ids are numbered densely as first seen, into [token × L × E] tables.
/// Two budgets keep a trace of millions of tokens in bounds: work — above `workBudget` token-layers
/// every `stride`-th token is counted (an even subsample, as RMoE's per-token estimator takes) —
/// and memory — at most `maxDistinctTokens` ids get a row, later new ids are left out. Tokens
/// not counted either way are in `uncountedOccurrences`.
public struct TokenExpertCounts: Sendable {
    public let layerCount: Int
    public let numExperts: Int
    public let maxDistinctTokens: Int
    /// Every `stride`-th token (counted over everything added) is counted.
    public let stride: Int
    private var seen = 0
    private var denseIndex: [Int: Int32] = [:]
    /// Dense number → token id, and its occurrences.
    public private(set) var tokenIDs: [Int] = []
    public private(set) var occurrences: [Int] = []
    private var firstChoice: [UInt32] = []
    private var inTopK: [UInt32] = []
    public private(set) var uncountedOccurrences = 0

    /// The tables take at most an eighth of the memory budget and 512 MiB; the work at most
    /// `workBudget` token-layers of the `expectedTokens`.
    public init(layerCount: Int, numExperts: Int, expectedTokens: Int, workBudget: Int = 16 << 20) {
        self.layerCount = layerCount
        self.numExperts = numExperts
        let row = max(1, layerCount * numExperts)
        let budget = min(MemoryBudget.availableBytes / 8, 512 << 20)
        maxDistinctTokens = max(0, budget / (row * 8))
        let work = max(1, expectedTokens * layerCount)
        stride = max(1, (work + workBudget - 1) / workBudget)
        // Rows for the distinct ids to expect, at once: growing by doubling would copy the tables.
        let rows = min(maxDistinctTokens, (expectedTokens + stride - 1) / stride)
        firstChoice.reserveCapacity(rows * row)
        inTopK.reserveCapacity(rows * row)
    }

    /// Whether any token was left out (subsampled, or over the memory budget).
    public var isPartial: Bool { uncountedOccurrences > 0 }

    /// Numbers `tokens` (−1 for an id over the limit), counts their occurrences and grows the tables.
    mutating func register(_ tokens: [Int]) -> [Int32] {
        let row = layerCount * numExperts
        return tokens.map { token in
            defer { seen += 1 }
            guard seen % stride == 0 else {
                uncountedOccurrences += 1
                return -1
            }
            if let index = denseIndex[token] {
                occurrences[Int(index)] += 1
                return index
            }
            guard tokenIDs.count < maxDistinctTokens else {
                uncountedOccurrences += 1
                return -1
            }
            let index = Int32(tokenIDs.count)
            denseIndex[token] = index
            tokenIDs.append(token)
            occurrences.append(1)
            firstChoice.append(contentsOf: repeatElement(0, count: row))
            inTopK.append(contentsOf: repeatElement(0, count: row))
            return index
        }
    }

    mutating func withTables(_ body: (UnsafeMutablePointer<UInt32>, UnsafeMutablePointer<UInt32>) -> Void) {
        if firstChoice.isEmpty {
            var none: UInt32 = 0
            var alsoNone: UInt32 = 0
            body(&none, &alsoNone)
            return
        }
        firstChoice.withUnsafeMutableBufferPointer { first in
            inTopK.withUnsafeMutableBufferPointer { top in body(first.baseAddress!, top.baseAddress!) }
        }
    }

    /// The `count` tokens `expert` receives most often at `layer` (top-k slots), with their counts.
    public func topTokens(layer: Int, expert: Int, count: Int) -> [(token: Int, count: Int)] {
        var best: [(token: Int, count: Int)] = []
        for d in tokenIDs.indices {
            let n = Int(inTopK[(d * layerCount + layer) * numExperts + expert])
            guard n > 0 else { continue }
            let candidate = (token: tokenIDs[d], count: n)
            if best.count == count, let worst = best.last, worst.count > n || (worst.count == n && worst.token < candidate.token) {
                continue
            }
            best.append(candidate)
            best.sort { $0.count != $1.count ? $0.count > $1.count : $0.token < $1.token }
            if best.count > count { best.removeLast() }
        }
        return best
    }

    /// Mean over token ids seen ≥ `minimumOccurrences` times of max_e N(x, e) / N(x), where
    /// N(x, e) counts occurrences of x with e as first choice (`topK` false) or in the top-k
    /// set. Summed in token-id order, so the result does not depend on hashing.
    public func specialisation(layer: Int, topK: Bool, minimumOccurrences: Int) -> (mean: Double, tokens: Int) {
        let table = topK ? inTopK : firstChoice
        var total = 0.0
        var counted = 0
        for d in tokenIDs.indices.sorted(by: { tokenIDs[$0] < tokenIDs[$1] }) where occurrences[d] >= minimumOccurrences {
            let base = (d * layerCount + layer) * numExperts
            total += Double(table[base..<base + numExperts].max() ?? 0) / Double(occurrences[d])
            counted += 1
        }
        return (counted > 0 ? total / Double(counted) : 0, counted)
    }
}
