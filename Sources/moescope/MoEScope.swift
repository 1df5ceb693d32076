import ArgumentParser
import MoECore

@main
struct MoEScope: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "moescope",
        abstract: "Watch a Mixture-of-Experts language model route its tokens.",
        discussion: """
        Routers (--router):
        \(RouterKind.allCases.map { "  \($0.rawValue.padding(toLength: 13, withPad: " ", startingAt: 0)) \($0.equation)\($0.isOurInterpretation ? "  [our interpretation]" : "")" }.joined(separator: "\n"))

        Routers marked [our interpretation] come from "Optimizing MoE Routers" (Harvey, Weale,
        Yilmaz 2025), whose exact formulas are not public; the forms above are moescope's reading.
        Hash follows Roller et al. 2021; GRU is RMoE (Qiu et al. 2024).
        """,
        subcommands: [ExploreCommand.self, Trace.self, AnalyzeCommand.self, TrainCommand.self, CompareCommand.self, BenchCommand.self, TokenizerCommand.self],
        defaultSubcommand: ExploreCommand.self
    )
}

extension RouterKind: ExpressibleByArgument {}
