import Foundation
import MoECore
import Testing

@testable import MoEScopeUI

/// A decoder whose routing at every layer is set by hand: token t chooses `pattern[t % count]`.
struct HandRoutedDecoder: RoutingDecoder {
    var inner: any RoutingDecoder
    let pattern: [[Int]]
    var position = 0
    mutating func feed(_ tokens: [Int], allExpertNorms: Bool) throws -> (
        routing: [RoutingTrace], lastLogits: [Float]
    ) {
        var result = try inner.feed(tokens, allExpertNorms: allExpertNorms)
        for t in result.routing.indices {
            for l in result.routing[t].layers.indices {
                result.routing[t].layers[l].experts = pattern[position % pattern.count]
            }
            position += 1
        }
        return result
    }
}

@Suite struct RoutingPatternViewTests {
    static func state(_ pattern: [[Int]]) throws -> ExplorerState {
        var c = ModelConfig.tiny(router: .linear)
        c.numExperts = 8
        var state = try ExplorerShapeTests.state(
            DecoderWrappedModel(base: try MoEModel(config: c, seed: 5)) { HandRoutedDecoder(inner: $0, pattern: pattern) })
        state.handle(.end)
        return state
    }

    /// The numbers on the co-activation row of expert `e`, in expert-id order (the last line
    /// starting with its id: the header starts with the first).
    static func coActivationRow(_ text: String, expert e: Int) -> [Double] {
        let line = text.split(separator: "\n").last {
            $0.drop { !$0.isLetter && !$0.isNumber }.hasPrefix("E\(e) ")
        }
        return (line ?? "").split(separator: " ").compactMap { Double($0) }
    }

    /// Experts 1 and 2 chosen together for every even token, 2 and 3 for every odd one:
    /// P(2 | 1) = 1, P(1 | 2) = P(3 | 2) = ½, P(2 | 3) = 1, the rest 0.
    @Test func coActivationIsTheShareOfTokensChoosingBoth() throws {
        var state = try Self.state([[1, 2], [2, 3]])
        while state.view != .coActivation { state.handle(.tab) }
        state.handle(.character("+"))
        state.handle(.character("+"))
        let text = ExplorerRenderer.render(state, width: 140, height: 45).text
        #expect(text.contains("Expert co-activation") && text.contains("also holds expert j"))
        #expect(Self.coActivationRow(text, expert: 1) == [0, 0, 1, 0, 0, 0, 0, 0])
        #expect(Self.coActivationRow(text, expert: 2) == [0, 0.5, 0, 0.5, 0, 0, 0, 0])
        #expect(Self.coActivationRow(text, expert: 3) == [0, 0, 1, 0, 0, 0, 0, 0])
        #expect(Self.coActivationRow(text, expert: 0) == [0, 0, 0, 0, 0, 0, 0, 0])
        state.handle(.down)  // the same routing at every layer: a deeper layer reads the same
        #expect(state.layer == 1)
        #expect(
            Self.coActivationRow(ExplorerRenderer.render(state, width: 140, height: 45).text, expert: 2) == [0, 0.5, 0, 0.5, 0, 0, 0, 0])
    }

    /// Top-1 experts 1, 1, 2 repeating: tokens 1, 4, 7, … repeat their predecessor's first choice.
    @Test func tokenStripMarksRepeatedFirstChoices() throws {
        var state = try Self.state([[1, 2], [1, 3], [2, 1]])
        let pairs = state.cursor
        let repeated = (1...pairs).filter { $0 % 3 == 1 }.count
        let percent = Int((100 * Double(repeated) / Double(pairs)).rounded())
        var text = ExplorerRenderer.render(state, width: 140, height: 45).text
        #expect(text.contains("same top-1 as previous: \(percent)%"))
        #expect(text.contains("↺1") && !text.contains("↺2"))
        state.palette = Palette(mode: .monochrome, asciiOnly: true)
        text = ExplorerRenderer.render(state, width: 140, height: 45).text
        #expect(text.allSatisfy { $0.isASCII })
        #expect(text.contains("=1") && text.contains("same top-1 as previous: \(percent)%"))
    }
}
