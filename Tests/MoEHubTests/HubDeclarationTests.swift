import Foundation
import MoECore
import Testing

@testable import MoEHub

/// A Hugging Face model is read by walking its declaration: every weight declared once by its
/// checkpoint name, and each way the files can disagree with it said in one line.
@Suite final class HubDeclarationTests {
    /// The folders a test makes, removed with it (swift-testing makes one instance a test).
    let scratchRoot = FileManager.default.temporaryDirectory.appendingPathComponent("hub-declared-\(UUID())").path
    deinit { try? FileManager.default.removeItem(atPath: scratchRoot) }

    static let fixtures = HubParityTests.fixtures

    /// Each family's model asks its checkpoint for exactly the tensors it declares, each once, in
    /// declaration order, and those are all the tensors its files hold (fused experts: each
    /// expert asks for its own part of the layer's tensor).
    @Test(arguments: ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3"])
    func loadingAsksForExactlyTheDeclaredTensors(family: String) throws {
        let folder = "\(Self.fixtures)/\(family)"
        let config = try HubConfig(folder: folder)
        let weights = try HubWeights(folder: folder)
        let reader = HubWeightReader(weights)
        _ = try HubModel(config: config, reading: reader)
        let layout = HubCheckpointLayout(config: config, names: weights.contains)
        #expect(layout.experts == (family == "mixtral" ? .fused : .separate))
        let declared = HubDeclaration(config: config, layout: layout).tensors
        #expect(reader.asked == declared)
        #expect(Set(reader.asked).count == reader.asked.count)
        #expect(Set(reader.asked.map(\.name)) == Set(weights.tensorFiles.map(\.tensor)))
        if family == "deepseek_v3" { #expect(declared.contains { $0.name == "model.layers.1.mlp.gate.e_score_correction_bias" }) }
        if family == "qwen2_moe" { #expect(declared.contains { $0.name == "model.layers.0.self_attn.q_proj.bias" }) }
    }

    /// The fixture's tensors, edited, written as `model.safetensors` of a scratch copy.
    func scratchModel(_ family: String, edit: (inout [String: Tensor]) -> Void, config: ((inout [String: Any]) -> Void)? = nil)
        throws -> String
    {
        let folder = "\(scratchRoot)/\(UUID())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let source = try SafeTensorsFile(path: "\(Self.fixtures)/\(family)/model.safetensors")
        var tensors = try Dictionary(uniqueKeysWithValues: source.entries.keys.map { ($0, try source.tensor($0)) })
        edit(&tensors)
        try SafeTensorsFile.write(tensors, to: "\(folder)/model.safetensors")
        var json =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(Self.fixtures)/\(family)/config.json")))
            as! [String: Any]
        config?(&json)
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: "\(folder)/config.json"))
        return folder
    }

    func expectRefused(_ folder: String, _ phrases: [String]) {
        #expect {
            try HubModel(folder: folder)
        } throws: { error in
            let line = "\(error)"
            return !line.contains("\n") && phrases.allSatisfy(line.contains)
        }
    }

    /// A missing tensor, a wrong shape, a wrong dtype and a tensor nothing declares: one line
    /// each, naming the file, the tensor and what to do.
    @Test func disagreementsWithTheDeclarationAreNamed() throws {
        let gate = "model.layers.1.mlp.gate.weight"
        var folder = try scratchModel("mixtral") { $0[gate] = nil }
        expectRefused(folder, ["\(folder)/model.safetensors: no tensor \"\(gate)\"", "use the config.json saved with these weights"])

        folder = try scratchModel("mixtral") { $0[gate] = Tensor(zeros: [3, 32]) }
        expectRefused(folder, ["\(folder)/model.safetensors: tensor \"\(gate)\" has shape [3, 32], config.json implies [4, 32]"])

        // q/k/v biases the config does not declare would otherwise be left out without a word.
        let bias = "model.layers.0.self_attn.q_proj.bias"
        folder = try scratchModel("mixtral") { $0[bias] = Tensor(zeros: [32]) }
        expectRefused(folder, ["\(folder)/model.safetensors: tensor \"\(bias)\" is no weight", "use the config.json saved"])

        // A layer more than config.json has: the model would run with the last layer cut off.
        folder = try scratchModel("mixtral") { $0["model.layers.2.input_layernorm.weight"] = Tensor(zeros: [32]) }
        expectRefused(folder, ["tensor \"model.layers.2.input_layernorm.weight\" is no weight"])

        // A norm's gain stored as integers: the file, the tensor and the dtype.
        folder = try scratchModel("mixtral") { _ in }
        let path = "\(folder)/model.safetensors"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let entry = "\"model.norm.weight\":{\"data_offsets\":"
        let length = Int(UInt64(littleEndian: bytes.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }))
        let header = String(decoding: bytes[8..<8 + length], as: UTF8.self)
        let start = try #require(header.range(of: entry))
        let dtype = try #require(header[start.upperBound...].range(of: "\"F32\""))
        let patched = header.replacingCharacters(in: dtype, with: "\"I32\"")
        bytes.replaceSubrange(8..<8 + patched.utf8.count, with: Data(patched.utf8))
        try bytes.write(to: URL(fileURLWithPath: path))
        expectRefused(folder, ["\(path): tensor model.norm.weight has dtype I32", "convert the file"])
    }

    /// What a checkpoint holds and moescope knowingly does not read: RoPE's inv_freq buffer and
    /// DeepSeek-V3's multi-token-prediction layers (`num_nextn_predict_layers` of them, after the last).
    @Test func tensorsLeftUnreadOnPurpose() throws {
        let folder = try scratchModel("mixtral") { $0["model.layers.0.self_attn.rotary_emb.inv_freq"] = Tensor(zeros: [4]) }
        _ = try HubModel(folder: folder)

        let prediction = "model.layers.3.eh_proj.weight"
        let v3 = try scratchModel("deepseek_v3") { $0[prediction] = Tensor(zeros: [32, 64]) }
        _ = try HubModel(folder: v3)
        let without = try scratchModel("deepseek_v3", edit: { $0[prediction] = Tensor(zeros: [32, 64]) }) {
            $0["num_nextn_predict_layers"] = 0
        }
        expectRefused(without, ["tensor \"\(prediction)\" is no weight"])
    }
}
