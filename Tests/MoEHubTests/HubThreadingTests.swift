import Foundation
import MoECore
import Testing

@testable import MoEHub

/// A Hugging Face model's forward pass on several threads equals one thread bit for bit, for
/// every family and stored dtype (the kernel-level split is tested in StoredWeightTests).
@Suite struct HubThreadingTests {
    @Test(arguments: ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3"])
    func threadsGiveBitIdenticalDecoding(family: String) throws {
        let folder = "\(HubParityTests.fixtures)/\(family)"
        let ids = try HubParityTests.Reference(folder: folder).ids
        var model = try HubModel(folder: folder)
        var runs: [[UInt32]] = []
        for threads in [1, 2, 3] {
            model.threads = threads
            var cache = model.makeCache()
            var bits = try model.forward(Array(ids.prefix(9)), appendingTo: &cache).logits.scalars.map(\.bitPattern)
            for id in ids.dropFirst(9).prefix(4) { bits += try model.forward([id], appendingTo: &cache).logits.scalars.map(\.bitPattern) }
            runs.append(bits)
        }
        #expect(runs[1] == runs[0] && runs[2] == runs[0], "\(family)")
    }
}
