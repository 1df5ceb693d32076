import Foundation
import Testing

@testable import MoECore

@Suite final class SafeTensorsTests {
    let directory: URL = {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("moescope-st-\(UUID())")
        try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }()

    /// Each test's folder goes with it (swift-testing makes one instance a test).
    deinit { try? FileManager.default.removeItem(at: directory) }

    func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    static let sample: [String: Tensor] = [
        "a.weight": Tensor(shape: [2, 3], scalars: [1, -2.5, 0.125, 3e-3, -0, 65504]),
        "b": Tensor(shape: [4], scalars: [0.1, 0.2, 0.3, -7.75]),
        "scalar": Tensor(shape: [], scalars: [42]),
        "empty": Tensor(shape: [0, 5], scalars: []),
    ]

    @Test(arguments: SafeTensorsDType.allCases.filter(\.isFloat))
    func roundTrips(dtype: SafeTensorsDType) throws {
        let file = path("rt-\(dtype.rawValue).safetensors")
        try SafeTensorsFile.write(Self.sample, dtype: dtype, metadata: ["k": "v"], to: file)
        let loaded = try SafeTensorsFile(path: file)
        #expect(Set(loaded.entries.keys) == Set(Self.sample.keys))
        #expect(loaded.metadata["k"] == "v")
        for (name, original) in Self.sample {
            let t = try loaded.tensor(name, shape: original.shape)
            #expect(t.shape == original.shape)
            for (x, y) in zip(t.scalars, original.scalars) {
                switch dtype {
                case .f32: #expect(x == y)
                case .f16: #expect(x == Float(Float16(y)))
                case .bf16: #expect(abs(x - y) <= abs(y) / 128)  // 8 significant bits
                case .i32, .i64: Issue.record("weights are floats")
                }
            }
        }
    }

    /// Reading a tensor gives its file pages back (`dropPages`): reading it again, or the
    /// tensors beside it, whose pages it shares at its ends, gives the same values.
    @Test func tensorsReadAgainAfterTheirPagesAreDropped() throws {
        var g = SeededGenerator(seed: 4)
        let tensors = ["a": [3, 1001], "b": [5000], "c": [7], "d": [2, 2048]].mapValues { Tensor(randomNormal: $0, std: 1, using: &g) }
        let file = path("pages.safetensors")
        try SafeTensorsFile.write(tensors, to: file)
        let loaded = try SafeTensorsFile(path: file)
        for name in ["b", "a", "b", "c", "d", "a", "d"] {
            #expect(try loaded.tensor(name).scalars.map(\.bitPattern) == tensors[name]!.scalars.map(\.bitPattern), "\(name)")
        }
        #expect(try loaded.mapped("b").decoded().scalars.map(\.bitPattern) == tensors["b"]!.scalars.map(\.bitPattern))
    }

    @Test func bfloat16RoundsToNearestEven() {
        #expect(SafeTensorsFile.bfloat16Bits(1) == 0x3F80)
        #expect(SafeTensorsFile.bfloat16Bits(Float(bitPattern: 0x3F80_8000)) == 0x3F80)  // tie → even
        #expect(SafeTensorsFile.bfloat16Bits(Float(bitPattern: 0x3F81_8000)) == 0x3F82)  // tie → even
        #expect(SafeTensorsFile.bfloat16Bits(Float(bitPattern: 0x3F80_8001)) == 0x3F81)
    }

    /// A valid file's bytes, to be damaged by each case.
    func validBytes() throws -> Data {
        let file = path("valid.safetensors")
        try SafeTensorsFile.write(Self.sample, to: file)
        return try Data(contentsOf: URL(fileURLWithPath: file))
    }

    func header(_ json: String, data: Int = 0) -> Data {
        var out = Data()
        withUnsafeBytes(of: UInt64(json.utf8.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(Data(json.utf8))
        out.append(Data(count: data))
        return out
    }

    func open(_ bytes: Data) throws {
        let file = path("bad-\(UUID()).safetensors")
        try bytes.write(to: URL(fileURLWithPath: file))
        _ = try SafeTensorsFile(path: file)
    }

    @Test func truncatedFilesAreReported() throws {
        let bytes = try validBytes()
        for cut in [0, 5, 12, bytes.count - 1] {
            #expect { try open(bytes.prefix(cut)) } throws: { error in
                guard case .truncated = error as? CheckpointError else { return false }
                return "\(error)".contains("truncated")
            }
        }
    }

    @Test func badHeadersAreReported() {
        let cases: [Data] = [
            header("not json"),
            header("[1,2,3]"),
            header(#"{"t":{"dtype":"F32","shape":[2]}}"#),  // no offsets
            header(#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, data: 8),  // size mismatch
            header(#"{"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, data: 8),
            header(#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, data: 8),
            {
                var d = Data()
                withUnsafeBytes(of: UInt64.max.littleEndian) { d.append(contentsOf: $0) }
                return d
            }(),
        ]
        for bytes in cases {
            #expect { try open(bytes) } throws: { error in
                guard case .badHeader = error as? CheckpointError else { return false }
                return true
            }
        }
    }

    @Test func unsupportedDTypeIsNamed() {
        #expect { try open(header(#"{"t":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}}"#, data: 1)) } throws: { error in
            guard case .unsupportedDType(_, let tensor, let dtype) = error as? CheckpointError else { return false }
            return tensor == "t" && dtype == "I8"
        }
    }

    @Test func missingTensorAndWrongShapeAreReported() throws {
        let file = path("shapes.safetensors")
        try SafeTensorsFile.write(Self.sample, to: file)
        let loaded = try SafeTensorsFile(path: file)
        #expect(throws: CheckpointError.missingTensor(path: file, tensor: "nope")) { try loaded.tensor("nope") }
        #expect(throws: CheckpointError.wrongShape(path: file, tensor: "b", expected: [2, 2], found: [4])) {
            try loaded.tensor("b", shape: [2, 2])
        }
    }

    @Test func missingFileIsReported() {
        #expect { try SafeTensorsFile(path: path("absent.safetensors")) } throws: { error in
            "\(error)".contains("absent.safetensors: no such file")
        }
    }

    @Test func errorsAreOneLineAndSayWhatToDo() {
        let errors: [CheckpointError] = [
            .truncated(path: "m", detail: "x"), .badHeader(path: "m", detail: "x"), .unsupportedDType(path: "m", tensor: "t", dtype: "I8"),
            .missingTensor(path: "m", tensor: "t"), .wrongShape(path: "m", tensor: "t", expected: [1], found: [2]),
            .unreadable(path: "m", reason: "x"), .badConfig(path: "m", detail: "x"),
        ]
        for error in errors {
            #expect(!error.description.contains("\n"))
            #expect(error.description.contains(" — "))
        }
    }
}
