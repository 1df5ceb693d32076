import MoECore

extension HubModel {
    /// Bytes of weights one decoded token reads: every layer's attention projections, its
    /// router, the k chosen experts (all experts of a layer are the same size) and any shared
    /// or dense MLP, the LM head, and one row of the embedding. The physical limit of decoding
    /// is this over the memory's read bandwidth.
    public var weightBytesPerToken: Int {
        var total = lmHead.byteCount + embedding.columns * embedding.dtype.byteSize
        for layer in layers {
            total += [layer.q, layer.k, layer.v, layer.o].compactMap { $0?.byteCount }.reduce(0, +)
            if let latent = layer.latent {
                switch latent.query {
                case .full(let projection): total += projection.byteCount
                case .lowRank(let down, _, let up): total += down.byteCount + up.byteCount
                }
                total += latent.latentDown.byteCount + latent.latentUp.byteCount
            }
            total += layer.dense?.byteCount ?? 0
            if let moe = layer.moe {
                total += moe.router.count * 4 + (moe.sharedGate?.count ?? 0) * 4
                total += config.topK * (moe.experts.first?.byteCount ?? 0) + (moe.shared?.byteCount ?? 0)
            }
        }
        return total
    }

    /// The dtype the LM head (the largest single read) is stored in: the model's weight dtype.
    public var weightDType: SafeTensorsDType { lmHead.weight.dtype }
}

extension HubMLP {
    var byteCount: Int { gate.byteCount + up.byteCount + down.byteCount }
}
