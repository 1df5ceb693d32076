import Foundation

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
