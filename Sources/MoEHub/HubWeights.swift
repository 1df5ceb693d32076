import Foundation
import MoECore

/// The safetensors files of a Hugging Face folder: one `model.safetensors`, or the shards that
/// `model.safetensors.index.json` maps tensor names to. Every file is memory-mapped; tensors
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
            let listing = (try? manager.contentsOfDirectory(atPath: path)) ?? []
            names = listing.filter { $0.hasSuffix(".safetensors") && !$0.hasPrefix(".") }.sorted()
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

    /// The tensor `name`, checked against `shape` when given.
    public func tensor(_ name: String, shape: [Int]? = nil) throws -> MappedTensor {
        guard let index = location[name] else { throw HubError.missingWeight(path: path, tensor: name) }
        let tensor = try files[index].mapped(name)
        if let shape, shape != tensor.shape { throw HubError.wrongShape(path: path, tensor: name, expected: shape, found: tensor.shape) }
        return tensor
    }
}
