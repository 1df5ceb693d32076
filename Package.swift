import Foundation
// swift-tools-version: 6.0
import PackageDescription

/// SIMD code needs an explicit CPU target: without one, `SIMD16<Float>` FMAs lower to
/// per-lane library calls (~150x slower, measured). We pick the target from this machine's
/// CPU flags so other CPUs never get instructions they lack (SIGILL).
/// Override with `MOESCOPE_TARGET_CPU=<llvm cpu name>`, or `=none` to build generic x86-64.
func detectedTargetCPU() -> String? {
    let env = ProcessInfo.processInfo.environment["MOESCOPE_TARGET_CPU"]
    if let env { return env == "none" ? nil : env }
    #if arch(x86_64)
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
            let flagsLine = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
        else { return nil }
        let flags = Set(flagsLine.split(separator: " ").map(String.init))
        if flags.isSuperset(of: ["avx512f", "avx512bw", "avx512vl", "avx512dq", "fma"]) { return "skylake-avx512" }
        if flags.isSuperset(of: ["avx2", "fma", "f16c", "bmi2"]) { return "haswell" }
    #endif
    return nil
}

/// With 512-bit vectors (32 registers) the product's micro-tile is twice as wide:
/// `MOESCOPE_WIDE_VECTORS` tells Kernels.swift which tile fits the target's registers.
let simdSettings: [SwiftSetting] =
    detectedTargetCPU().map { cpu in
        [.unsafeFlags(["-target-cpu", cpu])] + (cpu.contains("avx512") ? [.define("MOESCOPE_WIDE_VECTORS")] : [])
    } ?? []

let package = Package(
    name: "moescope",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "moescope", targets: ["moescope"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0")
    ],
    targets: [
        .systemLibrary(name: "CMemoryHints"),
        .target(name: "MoECore", dependencies: ["CMemoryHints"], swiftSettings: simdSettings),
        .target(name: "MoETraining", dependencies: ["MoECore"], swiftSettings: simdSettings),
        .target(name: "MoEAnalysis", dependencies: ["MoECore"], swiftSettings: simdSettings),
        .target(name: "MoEHub", dependencies: ["MoECore"], swiftSettings: simdSettings),
        .systemLibrary(name: "CNcursesw"),
        .target(name: "MoEScopeUI", dependencies: ["MoECore", "MoEAnalysis", "CNcursesw"], swiftSettings: simdSettings),
        .executableTarget(
            name: "moescope",
            dependencies: [
                "MoECore",
                "MoETraining",
                "MoEAnalysis",
                "MoEHub",
                "MoEScopeUI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: simdSettings
        ),
        .testTarget(name: "MoECoreTests", dependencies: ["MoECore"], swiftSettings: simdSettings),
        .testTarget(name: "MoETrainingTests", dependencies: ["MoETraining"], swiftSettings: simdSettings),
        .testTarget(name: "MoEAnalysisTests", dependencies: ["MoEAnalysis"], swiftSettings: simdSettings),
        .target(name: "FuzzSupport", dependencies: ["MoECore"], path: "Tests/FuzzSupport"),
        .testTarget(name: "MoEHubTests", dependencies: ["MoEHub", "MoEAnalysis", "FuzzSupport"], swiftSettings: simdSettings),
        .testTarget(name: "MoEScopeUITests", dependencies: ["MoEScopeUI", "MoEHub"], swiftSettings: simdSettings),
        .testTarget(name: "MoEScopeCLITests", dependencies: ["MoECore", "MoETraining", "FuzzSupport"], swiftSettings: simdSettings),
    ],
    swiftLanguageModes: [.v6]
)
