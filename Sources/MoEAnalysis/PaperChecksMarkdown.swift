import Foundation

extension AnalysisReport {
    /// The paper checks as Markdown: each paper's definition, moescope's numbers per layer, the
    /// random-routing baseline and the published numbers where we have them.
    public var paperChecksMarkdown: String {
        var out: [String] = []
        func f(_ v: Double, _ digits: Int = 3) -> String { String(format: "%.\(digits)f", v) }
        func pct(_ v: Double) -> String { String(format: "%.1f %%", v * 100) }
        let checks = paperChecks

        let rep = checks.mixtralRepetition
        out.append("\n## Paper check · Mixtral Table 5: consecutive tokens routed to the same expert\n")
        out.append(rep.definition + "\n")
        out.append(
            "Random routing: first choice \(pct(rep.randomFirstChoice)) (1/\(numExperts)), any overlap \(pct(rep.randomAnyOverlap)) (1 − C(\(numExperts)−\(topK), \(topK))/C(\(numExperts), \(topK))).\n"
        )
        out.append(
            "| Layer | First choice | Any overlap of top-\(topK) | Pairs |" + rep.domains.map { " \($0.domain) first / overlap |" }.joined()
        )
        out.append("|---|---:|---:|---:|" + String(repeating: "---:|", count: rep.domains.count))
        for (i, l) in rep.layers.enumerated() {
            let byDomain = rep.domains.map { " \(pct($0.layers[i].firstChoice)) / \(pct($0.layers[i].anyOverlap)) |" }.joined()
            out.append("| L\(l.layer) | \(pct(l.firstChoice)) | \(pct(l.anyOverlap)) | \(l.pairs) |" + byDomain)
        }
        let published = rep.published
        out.append("\nPublished (\(published.source)), range over its 8 domains:\n")
        out.append("| Mixtral layer | First choice | First or second choice |")
        out.append("|---|---:|---:|")
        for (i, layer) in published.layers.enumerated() {
            let a = published.firstChoiceRange[i]
            let b = published.firstOrSecondRange[i]
            out.append("| \(layer) | \(pct(a.lowerBound))–\(pct(a.upperBound)) | \(pct(b.lowerBound))–\(pct(b.upperBound)) |")
        }

        let co = checks.olmoeCoActivation
        out.append("\n## Paper check · OLMoE: expert co-activation P(j | i)\n")
        out.append(co.definition + "\n")
        out.append(
            "Random routing: P(j | i) = \(f(co.randomAllPairs)) for every pair (all pairs), \(f(co.randomAdjacentPairs)) (adjacent pairs); a strongest partner near that means no preferred partners. \(co.publishedNote)\n"
        )
        out.append(
            "| Layer | Strongest partner, mean over experts (all pairs) | … (adjacent pairs) | Strongest pairs (all pairs) | Strongest pairs (adjacent) |"
        )
        out.append("|---|---:|---:|---|---|")
        for l in co.layers {
            func pairs(_ p: [ExpertPair]) -> String {
                p.prefix(3).map { "E\($0.expert)→E\($0.with) \(f($0.rate, 2))" }.joined(separator: ", ")
            }
            out.append(
                "| L\(l.layer) | \(f(l.meanStrongestAllPairs)) | \(f(l.meanStrongestAdjacentPairs)) | \(pairs(l.topAllPairs)) | \(pairs(l.topAdjacentPairs)) |"
            )
        }

        let vocab = checks.olmoeVocabularySpecialisation
        out.append("\n## Paper check · OLMoE: vocabulary specialisation\n")
        out.append(vocab.definition + "\n")
        out.append(
            "Random routing tends to \(f(vocab.randomTopOne)) (top-1) and \(f(vocab.randomTopK)) (top-\(topK)) for frequent tokens. \(vocab.publishedNote)\n"
        )
        out.append("| Layer | Top-1 | Top-\(topK) | Top-1, ids seen ≥ \(vocab.frequentMinimum)× | Distinct ids | Frequent ids |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for l in vocab.layers {
            out.append(
                "| L\(l.layer) | \(f(l.topOne)) | \(f(l.topK)) | \(f(l.topOneFrequent)) | \(l.distinctTokens) | \(l.frequentTokens) |")
        }

        let domain = checks.olmoeDomainSpecialisation
        if domain.domains.count > 1 {
            out.append("\n## Paper check · OLMoE: domain specialisation\n")
            out.append(domain.definition + "\n")
            out.append("Uniform routing: \(pct(Double(topK) / Double(numExperts))) (k/E). \(domain.publishedNote)\n")
            out.append("| Domain | " + layers.map { "L\($0.layer)" }.joined(separator: " | ") + " |")
            out.append("|---|" + String(repeating: "---|", count: layers.count))
            for d in domain.domains {
                out.append(
                    "| \(d.domain) | "
                        + d.layers.map { "E\($0.expert) \(pct($0.specialisation))" }.joined(separator: " | ") + " |")
            }
        }

        let mi = checks.rmoeMutualInformation
        out.append("\n## Paper check · RMoE appendix A.4: cross-layer mutual information, two estimators\n")
        out.append(mi.definition + "\n")
        out.append(mi.publishedNote + "\n")
        out.append("| Estimator | Mean over all layer pairs (nats) | Mean over adjacent layers |")
        out.append("|---|---:|---:|")
        out.append("| moescope, top-1 choices | \(f(mi.topOneMeanAllPairs)) | \(f(mi.topOneMeanAdjacent)) |")
        out.append(
            "| RMoE per-token, \(mi.bins) bins (\(mi.tokensUsed) tokens) | \(f(mi.perTokenMeanAllPairs)) | \(f(mi.perTokenMeanAdjacent)) |")

        let balance = checks.rmoeBalance
        out.append("\n## Paper check · RMoE Table 8: Inner and Outer Balance\n")
        out.append(balance.definition + "\n")
        out.append("Uniform router: Inner \(f(balance.uniformInner, 2)), Outer \(f(balance.uniformOuter)). \(balance.publishedNote)\n")
        out.append("| Layer | Inner Balance | Outer Balance |")
        out.append("|---|---:|---:|")
        for l in balance.layers { out.append("| L\(l.layer) | \(f(l.inner, 2)) | \(f(l.outer)) |") }
        return out.joined(separator: "\n")
    }
}
