import Foundation
import MoECore

/// The analyses a recorded routing trace allows, streamed over the file a block of tokens at a
/// time, so a trace far larger than memory is read once at the speed of its expert ids:
/// expert load and balance, co-activation, the mutual information of adjacent layers' top-1
/// choices, domain specialisation (all from the top-k ids), routing entropy and selection
/// margins (only where the trace holds logits or probabilities), and expert placement.
/// Memory is O(L · E²), independent of the number of tokens.
public struct TraceAnalysis: Sendable {
    public let numExperts: Int
    public let topK: Int
    public let routedLayers: [Int]
    public private(set) var tokens = 0
    /// [L × E]: routed slots per expert.
    private var loadTable: [Int]
    /// [L × E × E]: tokens that chose both i and j, stored once at [min(i, j) · E + max(i, j)].
    private var pairTable: [Int32]
    /// [(L − 1) × E × E]: joint counts of layer l's and layer l+1's top-1 experts.
    private var adjacentJoint: [Int32]
    /// Domain → [L × E] slots.
    private var domainTables: [String: [Int]] = [:]
    public private(set) var domainOrder: [String] = []
    /// Per layer: histogram of routing entropy (nats) in `entropyBins` bins over [0, ln E], and
    /// of selection margins over [−1, 1]; empty without scores.
    public private(set) var entropyHistogram: [[Int]] = []
    public private(set) var marginHistogram: [[Int]] = []
    public private(set) var entropySum: [Double] = []
    public static let entropyBins = 512

    public init(numExperts: Int, topK: Int, routedLayers: [Int], withScores: Bool) {
        self.numExperts = numExperts
        self.topK = topK
        self.routedLayers = routedLayers
        let l = routedLayers.count
        loadTable = Array(repeating: 0, count: l * numExperts)
        pairTable = Array(repeating: 0, count: l * numExperts * numExperts)
        adjacentJoint = Array(repeating: 0, count: max(0, l - 1) * numExperts * numExperts)
        if withScores {
            entropyHistogram = Array(repeating: Array(repeating: 0, count: Self.entropyBins), count: l)
            marginHistogram = entropyHistogram
            entropySum = Array(repeating: 0, count: l)
        }
    }

    /// Bytes the accumulators take (checked against the memory budget before allocating).
    public static func workingBytes(numExperts: Int, layers: Int) -> Int? {
        MemoryBudget.product([2 * layers, numExperts, numExperts, 4])
    }

    /// Adds `count` tokens' expert ids (count × L × k, layer-major per token), all of `domain`.
    /// Layers are independent (a layer's link to the one before reads that layer's ids), so
    /// they are shared out over the cores. Ids are checked; the first bad one throws with its
    /// token and layer.
    public mutating func add(ids: UnsafeBufferPointer<Int32>, count: Int, firstToken: Int, domain: String, path: String) throws {
        let l = routedLayers.count
        let k = topK
        let e = numExperts
        if domainTables[domain] == nil {
            domainTables[domain] = Array(repeating: 0, count: l * e)
            domainOrder.append(domain)
        }
        var domainCounts = domainTables.removeValue(forKey: domain)!
        defer { domainTables[domain] = domainCounts }
        // A bad id is looked for first, in one pass, so the counting below never indexes with one.
        for (index, id) in ids.enumerated() where UInt32(bitPattern: Int32(littleEndian: id)) >= UInt32(e) {
            let token = index / (l * k)
            let layer = index / k % l
            throw TraceDataError(
                path: path, token: firstToken + token, layer: routedLayers[layer],
                detail: "topk_ids holds expert \(Int32(littleEndian: id)), outside 0…\(e - 1)")
        }
        let base = ids.baseAddress!
        loadTable.withUnsafeMutableBufferPointer { loads in
            domainCounts.withUnsafeMutableBufferPointer { domains in
                pairTable.withUnsafeMutableBufferPointer { pairs in
                    adjacentJoint.withUnsafeMutableBufferPointer { joints in
                        // Threads take whole layers: no two write the same entry.
                        Kernels.parallelFor(l) { layer in
                            let counts = loads.baseAddress! + layer * e
                            let domainCounts = domains.baseAddress! + layer * e
                            let together = pairs.baseAddress! + layer * e * e
                            let joint = layer > 0 ? joints.baseAddress! + (layer - 1) * e * e : nil
                            let stride = l * k
                            for t in 0..<count {
                                let chosen = base + t * stride + layer * k
                                for a in 0..<k {
                                    let i = Int(Int32(littleEndian: chosen[a]))
                                    counts[i] += 1
                                    domainCounts[i] += 1
                                    // Each unordered pair once, in the upper triangle.
                                    for b in (a + 1)..<max(a + 1, k) {
                                        let j = Int(Int32(littleEndian: chosen[b]))
                                        together[i < j ? i * e + j : j * e + i] &+= 1
                                    }
                                }
                                if let joint {
                                    let previous = Int(Int32(littleEndian: (chosen - k)[0]))
                                    joint[previous * e + Int(Int32(littleEndian: chosen[0]))] &+= 1
                                }
                            }
                        }
                    }
                }
            }
        }
        tokens += count
    }

    /// Adds the scores of `count` tokens (count × L × E, logits or probabilities) for entropy
    /// and margins; `ids` are the same tokens' expert ids.
    public mutating func add(
        scores: UnsafeMutablePointer<Float>, kind: RoutingTraceFile.ScoreKind, ids: UnsafeBufferPointer<Int32>, count: Int
    ) {
        let l = routedLayers.count
        let e = numExperts
        let k = topK
        let lnE = max(log(Double(e)), 1e-9)
        for t in 0..<count {
            for layer in 0..<l {
                let p = scores + (t * l + layer) * e
                if kind == .logits { Kernels.softmax(p, count: e) }
                var h = 0.0
                for i in 0..<e where p[i] > 0 { h -= Double(p[i]) * log(Double(p[i])) }
                entropySum[layer] += h
                entropyHistogram[layer][min(Self.entropyBins - 1, max(0, Int(h / lnE * Double(Self.entropyBins))))] += 1
                var weakest = Float.infinity
                var unchosen = -Float.infinity
                let base = (t * l + layer) * k
                var isChosen = [Bool](repeating: false, count: e)
                for s in 0..<k {
                    let id = Int(ids[base + s])
                    isChosen[id] = true
                    weakest = min(weakest, p[id])
                }
                for i in 0..<e where !isChosen[i] { unchosen = max(unchosen, p[i]) }
                if unchosen.isFinite {
                    let margin = Double(weakest - unchosen)
                    marginHistogram[layer][min(Self.entropyBins - 1, max(0, Int((margin + 1) / 2 * Double(Self.entropyBins))))] += 1
                }
            }
        }
    }

    public var hasScores: Bool { !entropySum.isEmpty }

    /// [L][E]: routed slots per expert.
    public var load: [[Int]] { (0..<routedLayers.count).map { Array(loadTable[$0 * numExperts..<($0 + 1) * numExperts]) } }

    /// Domain → [L][E] slots.
    public var domainLoad: [String: [[Int]]] {
        domainTables.mapValues { table in (0..<routedLayers.count).map { Array(table[$0 * numExperts..<($0 + 1) * numExperts]) } }
    }

    public func loadStats(layer: Int) -> LoadBalanceStats {
        LoadBalanceStats(counts: Array(loadTable[layer * numExperts..<(layer + 1) * numExperts]))
    }

    /// Mean entropy (nats) of a layer; nil without scores.
    public func meanEntropy(layer: Int) -> Double? { hasScores && tokens > 0 ? entropySum[layer] / Double(tokens) : nil }

    /// The q-quantile of a histogram over [low, high].
    static func quantile(_ histogram: [Int], _ q: Double, low: Double, high: Double) -> Double {
        let total = histogram.reduce(0, +)
        guard total > 0 else { return 0 }
        var seen = 0
        for (i, c) in histogram.enumerated() {
            seen += c
            if Double(seen) >= q * Double(total) { return low + (Double(i) + 0.5) / Double(histogram.count) * (high - low) }
        }
        return high
    }

    public func entropyQuantile(layer: Int, _ q: Double) -> Double {
        Self.quantile(entropyHistogram[layer], q, low: 0, high: log(Double(numExperts)))
    }

    public func marginQuantile(layer: Int, _ q: Double) -> Double { Self.quantile(marginHistogram[layer], q, low: -1, high: 1) }

    /// I(top-1 at layer l; top-1 at layer l+1) in nats.
    public func adjacentMutualInformation(_ l: Int) -> Double {
        let e = numExperts
        let joint = adjacentJoint[l * e * e..<(l + 1) * e * e].map { $0 }
        var rows = [Double](repeating: 0, count: e)
        var columns = rows
        var total = 0.0
        for i in 0..<e {
            for j in 0..<e {
                let c = Double(joint[i * e + j])
                rows[i] += c
                columns[j] += c
                total += c
            }
        }
        guard total > 0 else { return 0 }
        var mi = 0.0
        for i in 0..<e where rows[i] > 0 {
            for j in 0..<e where joint[i * e + j] > 0 {
                let p = Double(joint[i * e + j]) / total
                mi += p * log(p * total * total / (rows[i] * columns[j]))
            }
        }
        return mi
    }

    /// Tokens that chose both i and j (i ≠ j) at `layer`.
    public func pairCount(layer: Int, _ i: Int, _ j: Int) -> Int {
        Int(pairTable[(layer * numExperts + min(i, j)) * numExperts + max(i, j)])
    }

    /// P(j chosen | i chosen) at `layer`: the pair count over i's load.
    public func coactivationProbability(layer: Int, _ i: Int, _ j: Int) -> Double {
        let slots = loadTable[layer * numExperts + i]
        return slots == 0 ? 0 : Double(pairCount(layer: layer, i, j)) / Double(slots)
    }

    /// The expert pair chosen together most often relative to chance: the lift of P(j | i) over
    /// P(j), the share of tokens that choose j at all, over pairs seen together at least 16 times.
    public func strongestPair(layer: Int) -> (i: Int, j: Int, lift: Double)? {
        guard tokens > 0, topK > 1 else { return nil }
        var best: (Int, Int, Double)?
        for i in 0..<numExperts {
            for j in (i + 1)..<max(i + 1, numExperts) where pairCount(layer: layer, i, j) >= 16 {
                let expected = Double(loadTable[layer * numExperts + j]) / Double(tokens)
                let lift = coactivationProbability(layer: layer, i, j) / max(expected, 1e-12)
                if best == nil || lift > best!.2 { best = (i, j, lift) }
            }
        }
        return best.map { ($0.0, $0.1, $0.2) }
    }
}

/// Where experts would sit in expert-parallel serving: E experts over G devices, E/G each.
/// Balancedness is mean device load over the largest device load (1 = even; the measure
/// SGLang's EPLB and vLLM's EPLB log), under the contiguous placement engines start from
/// (experts g·E/G ..< (g+1)·E/G on device g) and under a greedy re-placement (heaviest expert
/// first, onto the least-loaded device that still has a free slot).
public struct ExpertPlacement: Sendable, Equatable {
    public let devices: Int
    public let contiguousLoads: [Int]
    public let greedyLoads: [Int]
    /// Device of each expert under the greedy placement.
    public let greedyAssignment: [Int]

    public init?(load: [Int], devices: Int) {
        let e = load.count
        guard devices >= 1, e % devices == 0 else { return nil }
        let perDevice = e / devices
        self.devices = devices
        contiguousLoads = (0..<devices).map { g in load[(g * perDevice)..<((g + 1) * perDevice)].reduce(0, +) }
        var loads = [Int](repeating: 0, count: devices)
        var slots = [Int](repeating: 0, count: devices)
        var assignment = [Int](repeating: 0, count: e)
        for expert in (0..<e).sorted(by: { load[$0] != load[$1] ? load[$0] > load[$1] : $0 < $1 }) {
            var best = -1
            for g in 0..<devices where slots[g] < perDevice && (best < 0 || loads[g] < loads[best]) { best = g }
            assignment[expert] = best
            loads[best] += load[expert]
            slots[best] += 1
        }
        greedyLoads = loads
        greedyAssignment = assignment
    }

    static func balancedness(_ loads: [Int]) -> Double {
        guard let top = loads.max(), top > 0 else { return 1 }
        return Double(loads.reduce(0, +)) / Double(loads.count) / Double(top)
    }

    public var contiguousBalancedness: Double { Self.balancedness(contiguousLoads) }
    public var greedyBalancedness: Double { Self.balancedness(greedyLoads) }
    /// How much faster the slowest device finishes after re-placement (contiguous max / greedy max).
    public var gain: Double {
        let greedyMax = greedyLoads.max() ?? 0
        return greedyMax == 0 ? 1 : Double(contiguousLoads.max() ?? 0) / Double(greedyMax)
    }
}

extension TraceAnalysis {
    /// Streams `trace` through a `TraceAnalysis` in blocks of tokens; `progress` gets the
    /// tokens done after each block. Memory: the accumulators and one block.
    public static func run(_ trace: RoutingTraceFile, progress: (Int) -> Void = { _ in }) throws -> TraceAnalysis {
        let l = trace.routedLayerCount
        let e = trace.numExperts
        let scoreBlockBytes = MemoryBudget.product([l, e, 4]) ?? Int.max
        let needed = MemoryBudget.sum([workingBytes(numExperts: e, layers: l), scoreBlockBytes])
        let available = MemoryBudget.availableBytes
        guard let needed, needed < available / 2 else {
            throw CheckpointError.tooLarge(
                path: trace.path, what: "analysing \(l) layers × \(e) experts", neededBytes: needed, availableBytes: available)
        }
        var analysis = TraceAnalysis(numExperts: e, topK: trace.topK, routedLayers: trace.routedLayers, withScores: trace.scoreKind != nil)
        // Blocks of about 4 MB of ids; score blocks are E/k times larger, so fewer tokens.
        let idsPerToken = l * trace.topK
        let block = max(1, min(1 << 20 / max(1, idsPerToken), trace.scoreKind == nil ? Int.max : max(1, (1 << 22) / max(1, l * e))))
        var scores = [Float](repeating: 0, count: trace.scoreKind == nil ? 0 : block * l * e)
        for document in 0..<trace.documentCount {
            let domain = trace.domains[document].isEmpty ? "all" : trace.domains[document]
            var start = trace.documentOffsets[document]
            let end = trace.documentOffsets[document + 1]
            while start < end {
                let range = start..<min(end, start + block)
                let ids = trace.topkIDBytes(tokens: range)
                try analysis.add(ids: ids, count: range.count, firstToken: range.lowerBound, domain: domain, path: trace.path)
                if let kind = trace.scoreKind {
                    scores.withUnsafeMutableBufferPointer { buffer in
                        trace.decodeScores(tokens: range, into: buffer.baseAddress!)
                        analysis.add(scores: buffer.baseAddress!, kind: kind, ids: ids, count: range.count)
                    }
                }
                start = range.upperBound
                progress(start)
            }
        }
        return analysis
    }
}
