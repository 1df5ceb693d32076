import MoECore

/// Which experts a domain's tokens go to, and which tokens each expert receives.
public struct Specialisation: Sendable {
    public let numLayers: Int
    public let numExperts: Int
    /// domain → per layer → slots per expert (top-k).
    public private(set) var domainLoad: [String: [[Int]]] = [:]
    /// Domains in the order they were first seen.
    public private(set) var domains: [String] = []
    /// Per layer, per expert: token id → times routed there (top-k).
    public private(set) var tokenCounts: [[[Int: Int]]]

    public init(numLayers: Int, numExperts: Int) {
        self.numLayers = numLayers; self.numExperts = numExperts
        tokenCounts = Array(repeating: Array(repeating: [:], count: numExperts), count: numLayers)
    }

    public mutating func add(_ traces: [RoutingTrace], domain: String) {
        if domainLoad[domain] == nil { domains.append(domain) }
        // Taken out of the dictionary for the call, so the domain's name is hashed once, not per slot.
        var load = domainLoad.removeValue(forKey: domain) ?? Array(repeating: Array(repeating: 0, count: numExperts), count: numLayers)
        for trace in traces {
            for (i, routing) in trace.layers.enumerated() {
                for e in routing.experts {
                    load[i][e] += 1
                    tokenCounts[i][e][trace.token, default: 0] += 1
                }
            }
        }
        domainLoad[domain] = load
    }

    /// A domain's share of slots per expert at a layer.
    public func shares(domain: String, layer: Int) -> [Double] {
        let counts = domainLoad[domain]?[layer] ?? []
        let total = Double(counts.reduce(0, +))
        return counts.map { total > 0 ? Double($0) / total : 0 }
    }

    /// All domains' share of slots per expert at a layer.
    public func overallShares(layer: Int) -> [Double] {
        var counts = [Int](repeating: 0, count: numExperts)
        for domain in domains { for (e, c) in domainLoad[domain]![layer].enumerated() { counts[e] += c } }
        let total = Double(counts.reduce(0, +))
        return counts.map { total > 0 ? Double($0) / total : 0 }
    }

    /// The expert most over-represented in `domain` at `layer`: its lift is the domain's share
    /// of that expert over the overall share (1 = no preference).
    public func mostSpecificExpert(domain: String, layer: Int) -> (expert: Int, lift: Double) {
        let own = shares(domain: domain, layer: layer), overall = overallShares(layer: layer)
        let lifts = zip(own, overall).map { $1 > 0 ? $0 / $1 : 0 }
        let best = lifts.indices.max { lifts[$0] < lifts[$1] } ?? 0
        return (best, lifts.isEmpty ? 0 : lifts[best])
    }

    /// The `count` tokens expert `expert` receives most often at `layer`, with their counts.
    public func topTokens(layer: Int, expert: Int, count: Int) -> [(token: Int, count: Int)] {
        tokenCounts[layer][expert].sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
            .prefix(count).map { ($0.key, $0.value) }
    }
}
