import MoECore

extension HubModel {
    /// Bytes of weights one decoded token reads: every layer's attention projections, its
    /// router, the k chosen experts (all experts of a layer are the same size) and any shared
    /// or dense MLP, the LM head, and one row of the embedding. The physical limit of decoding
    /// is this over the memory's read bandwidth.
    public var weightBytesPerToken: Int {
        var total = lmHead.byteCount + embedding.columns * embedding.dtype.byteSize
        for layer in layers {
            switch layer.attentionKind {
            case .groupedQuery(let attention):
                total += [attention.query, attention.key, attention.value, attention.output].map(\.byteCount).reduce(0, +)
            case .latent(let attention):
                switch attention.query {
                case .full(let projection): total += projection.byteCount
                case .lowRank(let down, _, let up): total += down.byteCount + up.byteCount
                }
                total += attention.latentDown.byteCount + attention.latentUp.byteCount + attention.output.byteCount
            }
            switch layer.feedForward {
            case .dense(let mlp): total += mlp.byteCount
            case .sparse(let router, let moe):
                total += router.value.count * 4 + (moe.sharedGate?.value.count ?? 0) * 4
                total += config.topK * (moe.experts.first?.byteCount ?? 0) + (moe.shared?.byteCount ?? 0)
            }
        }
        return total
    }

    /// The dtype the LM head (the largest single read) is stored in: the model's weight dtype.
    public var weightDType: SafeTensorsDType { lmHead.weight.dtype }

    /// The LM head's stored bytes, where the mapping holds them: the largest region of weights
    /// every decoded token reads, for a plain read of the page cache the weights live in.
    public var lmHeadWeights: StoredMatrix { lmHead.weight.stored }
}

extension SwiGLU where P == MappedLinear {
    var byteCount: Int { gate.byteCount + up.byteCount + down.byteCount }
}
