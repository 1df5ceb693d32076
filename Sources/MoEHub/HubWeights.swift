import Foundation
import MoECore

/// The safetensors files of a Hugging Face folder: the shards that `model.safetensors.index.json`
/// maps tensor names to, or `model.safetensors` (without it, every `*.safetensors` file). Every file is memory-mapped; tensors
/// are handed out as `MappedTensor`s, so opening a model reads only the headers.
public struct HubWeights: Sendable {
    public let path: String
    let files: [SafeTensorsFile]
    let location: [String: Int]  // tensor name → index into files
    /// Bytes of tensor data over all files.
    public let totalBytes: Int

    public init(folder path: String) throws {
        self.path = path
        let manager = FileManager.default
        let indexPath = "\(path)/model.safetensors.index.json"
        var names: [String]
        var declared: [String: String] = [:]  // tensor → file, from the index
        if manager.fileExists(atPath: indexPath) {
            let data = try RegularFile.read(indexPath, what: "weight index", limit: 64 << 20)
            let index = try ConfigFields.parseObject(data) {
                HubError.notAModelFolder(path: path, detail: "model.safetensors.index.json \($0)")
            }
            guard let map = index["weight_map"]?.objectValue else {
                throw HubError.notAModelFolder(path: path, detail: "model.safetensors.index.json has no \"weight_map\" object")
            }
            for tensor in map.keys {
                guard let file = map[tensor]!.stringValue else {
                    throw HubError.notAModelFolder(
                        path: path,
                        detail: "model.safetensors.index.json maps \(tensor) to \(map[tensor]!.kindDescription), not a file name")
                }
                declared[tensor] = file
            }
            names = Array(Set(declared.values)).sorted()
            for name in names { try Self.checkInside(folder: path, name: name) }
        } else {
            // model.safetensors where there is one, as transformers reads a folder (other files
            // beside it, such as a reference output, are not weights); otherwise every file.
            let listing = (try? manager.contentsOfDirectory(atPath: path)) ?? []
            names = listing.filter { $0.hasSuffix(".safetensors") && !$0.hasPrefix(".") }.sorted()
            if names.contains("model.safetensors") { names = ["model.safetensors"] }
        }
        guard !names.isEmpty else { throw HubError.notAModelFolder(path: path, detail: "no *.safetensors weights") }
        var files: [SafeTensorsFile] = []
        var location: [String: Int] = [:]
        var total = 0
        for name in names {
            let file = try SafeTensorsFile(path: "\(path)/\(name)")
            for (tensor, entry) in file.entries {
                if let earlier = location[tensor] {
                    throw HubError.notAModelFolder(
                        path: path, detail: "tensor \(tensor) is in both \(names[earlier]) and \(name); remove the duplicate shard")
                }
                location[tensor] = files.count
                total += entry.byteRange.count
            }
            files.append(file)
        }
        for (tensor, file) in declared where location[tensor].map({ names[$0] }) != file {
            throw HubError.notAModelFolder(
                path: path, detail: "model.safetensors.index.json puts \(tensor) in \(file), which has no such tensor")
        }
        self.files = files
        self.location = location
        totalBytes = total
    }

    /// A `weight_map` file name must name a file in the model folder: no absolute path and no
    /// "..". (Symbolic links the folder itself holds are followed: the Hugging Face cache
    /// links every snapshot file to a blob outside the snapshot folder.)
    static func checkInside(folder: String, name: String) throws {
        guard !name.isEmpty, !name.hasPrefix("/"), !name.split(separator: "/").contains("..") else {
            throw HubError.notAModelFolder(
                path: folder,
                detail:
                    "model.safetensors.index.json names the weight file \"\(name)\", a path out of the folder — weight files must lie inside the model folder"
            )
        }
    }

    public func contains(_ name: String) -> Bool { location[name] != nil }

    /// Every tensor's name, and the file that holds it.
    var tensorFiles: [(tensor: String, file: String)] { location.map { ($0.key, files[$0.value].path) } }

    /// The tensor `name`, checked against `shape`. A missing tensor names the file(s) it should
    /// be in, a wrong shape or dtype the file it is in.
    public func tensor(_ name: String, shape: [Int]) throws -> MappedTensor {
        guard let index = location[name] else {
            throw HubError.missingWeight(
                path: files.count == 1 ? files[0].path : "\(path) (\(files.count) safetensors files)", tensor: name)
        }
        let tensor = try files[index].mapped(name)
        guard shape == tensor.shape else {
            throw HubError.wrongShape(path: files[index].path, tensor: name, expected: shape, found: tensor.shape)
        }
        return tensor
    }
}

/// Reads a declared model from its checkpoint, one declared tensor after another, recording
/// what it read (`asked`); `checkNothingElse` then refuses a tensor no block declared.
final class HubWeightReader {
    let weights: HubWeights
    private(set) var asked: [DeclaredTensor] = []

    init(_ weights: HubWeights) { self.weights = weights }

    /// The declared tensor (or its part), still mapped.
    func tensor(_ declared: DeclaredTensor) throws -> MappedTensor {
        asked.append(declared)
        let whole = try weights.tensor(declared.name, shape: declared.shape)
        guard let part = declared.part else { return whole }
        let expert = whole.slice(part.index)
        return part.rows.map { expert.rowSlice($0) } ?? expert
    }

    /// The weight mapped, the bias decoded.
    func linear(_ declared: DeclaredLinear) throws -> MappedLinear {
        MappedLinear(weight: try tensor(declared.weight), bias: try declared.bias.map { try tensor($0).decoded() })
    }

    /// A small parameter (a norm's gain, a router, a bias), decoded to Floats.
    func parameter(_ parameter: inout Parameter) throws {
        parameter.value = try tensor(DeclaredTensor(parameter.name, shape: parameter.shape)).decoded()
    }

    /// Every tensor in the files was read, but for those moescope knowingly leaves: RoPE's
    /// `inv_freq` buffer (some exports store it; it is computed from the config) and DeepSeek-V3's
    /// multi-token-prediction layers. Anything else means config.json describes another model
    /// (fewer layers, no biases or q/k norms where the weights have them), which would run
    /// without error and give wrong results, so it is refused.
    func checkNothingElse(config: HubConfig) throws {
        let read = Set(asked.map(\.name))
        let predictionLayers = config.numLayers..<config.numLayers + config.multiTokenPredictionLayers
        func left(_ name: String) -> Bool {
            if name.hasSuffix(".rotary_emb.inv_freq") { return true }
            let parts = name.split(separator: ".")
            return parts.count > 2 && parts[0] == "model" && parts[1] == "layers" && Int(parts[2]).map(predictionLayers.contains) == true
        }
        if let extra = weights.tensorFiles.filter({ !read.contains($0.tensor) && !left($0.tensor) }).min(by: { $0.tensor < $1.tensor }) {
            throw HubError.unexpectedWeight(path: extra.file, tensor: extra.tensor)
        }
    }
}
