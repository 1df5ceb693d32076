import Foundation
import Testing

/// `moescope diff` run as a user runs it: the JSON schema, the CSV header, and refusals.
@Suite(.serialized) struct DiffCommandTests {
    let runner = HostileInputTests()
    static let text = "The router sends every token to two of eight experts."

    static func object(_ stdout: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(stdout.utf8)) as? [String: Any])
    }

    /// Every per-layer entry: its fields present, shares in [0, 1], JS in [0, ln 2], counts consistent.
    static func checkLayers(_ value: Any?, count: Int, _ context: String) throws {
        let layers = try #require(value as? [[String: Any]], "\(context): layers")
        #expect(layers.count == count, "\(context)")
        for layer in layers {
            for key in [
                "layer", "tokens", "top1_agreement", "jaccard", "js_divergence", "disagreements", "near_tie_disagreements",
                "fragile_share_a", "fragile_share_b",
            ] {
                #expect(layer[key] is NSNumber, "\(context): \(key) missing in \(layer)")
            }
            let number = { (key: String) in (layer[key] as? NSNumber)?.doubleValue ?? .nan }
            for key in ["top1_agreement", "jaccard", "fragile_share_a", "fragile_share_b"] {
                #expect((0...1).contains(number(key)), "\(key)")
            }
            #expect(number("js_divergence") >= 0 && number("js_divergence") <= log(2) + 1e-9)
            #expect(number("near_tie_disagreements") <= number("disagreements") && number("disagreements") <= number("tokens"))
        }
    }

    @Test func jsonSchemaForTwoRouters() throws {
        let out = try runner.run(["diff", "--routers", "linear,gru", "--text", Self.text, "--json", "--probe"], seconds: 120)
        #expect(out.status == 0, "\(out.stderr)")
        let report = try Self.object(out.stdout)
        #expect(report["format"] as? String == "moescope-diff" && report["version"] as? Int == 1)
        #expect(report["a"] as? String == "linear" && report["b"] as? String == "gru")
        #expect(report["routed_layers"] as? [Int] == Array(0..<6))
        #expect(report["num_experts"] as? Int == 8 && report["top_k"] as? Int == 2)
        #expect((report["near_tie_threshold"] as? Double).map { abs($0 - 0.0125) < 1e-12 } == true)
        try Self.checkLayers(report["layers"], count: 6, "all")
        let domains = try #require(report["domains"] as? [[String: Any]])
        #expect(domains.count == 1 && domains[0]["domain"] as? String == "text")
        try Self.checkLayers(domains[0]["layers"], count: 6, "text")
        let probe = try #require(report["probe"] as? [[String: Any]])
        #expect(probe.map { $0["variant"] as? String } == ["f16", "bf16", "noise:0.01", "noise:0.1"])
        for entry in probe { try Self.checkLayers(entry["layers"], count: 6, "probe") }
    }

    @Test func aRouterAgainstItselfAgreesFully() throws {
        let out = try runner.run(["diff", "--routers", "gru,gru", "--text", Self.text, "--json"], seconds: 120)
        #expect(out.status == 0, "\(out.stderr)")
        let layers = try #require(try Self.object(out.stdout)["layers"] as? [[String: Any]])
        for layer in layers {
            #expect((layer["top1_agreement"] as? NSNumber)?.doubleValue == 1 && (layer["jaccard"] as? NSNumber)?.doubleValue == 1)
            #expect((layer["js_divergence"] as? NSNumber)?.doubleValue == 0 && layer["disagreements"] as? Int == 0)
        }
    }

    @Test func huggingFaceVariantAndCSV() throws {
        let folder = "\(HostileInputTests.root)/Tests/Fixtures/hf/deepseek_v3"
        let out = try runner.run(["diff", "--model", folder, "--variant", "bias-off", "--text", Self.text, "--json"], seconds: 120)
        #expect(out.status == 0, "\(out.stderr)")
        let report = try Self.object(out.stdout)
        #expect((report["b"] as? String)?.hasSuffix("without selection bias") == true)
        try Self.checkLayers(report["layers"], count: (report["routed_layers"] as? [Int])?.count ?? -1, "v3")
        let csv = try runner.run(["diff", "--model", folder, "--variant", "top-k+1", "--text", Self.text, "--csv"], seconds: 120)
        #expect(csv.status == 0, "\(csv.stderr)")
        let rows = csv.stdout.split(separator: "\n")
        #expect(
            rows.first
                == "scope,layer,tokens,top1_agreement,jaccard,js_divergence,disagreements,near_tie_disagreements,fragile_share_a,fragile_share_b"
        )
        #expect(rows.dropFirst().allSatisfy { $0.hasPrefix("all,") || $0.hasPrefix("domain:text,") })
    }

    @Test func badRequestsAreRefusedInOneLine() throws {
        try runner.expectRefused(["diff", "--routers", "linear"], ["--routers takes two routers"])
        try runner.expectRefused(["diff", "--routers", "linear,nope"], ["unknown router 'nope'"])
        try runner.expectRefused(["diff", "--text", "x"], ["--routers A,B", "--variant V"])
        try runner.expectRefused(["diff", "--variant", "fp8", "--text", "x"], ["--variant 'fp8'", "bias-off"])
        try runner.expectRefused(["diff", "--router", "linear", "--variant", "bias-off", "--text", "x"], ["does not apply", "renorm"])
        try runner.expectRefused(["diff", "--routers", "linear,gru", "--near-tie", "nan"], ["--near-tie"])
    }
}
