// LlamaModel's backward: from the gradients at its heads (next-token cross-entropy, or whatever a stage's
// loss gives each head) back through the final norm, every block (recomputed first under recompute `layer`)
// and the embedding, adding into `gradients`. Each step's comment names the forward line it reverses.
// What this is not: the forward or the buffers (Llama.swift), or any knowledge of ranks; `gradientsReady`
// tells a data-parallel caller what is final as backward goes.
import Kernels

extension LlamaModel {
    /// What the backward starts from at one head: next-token cross-entropy of the lm_head's logits over the
    /// last forward's counted targets, scaled; or gradients the caller writes over the head's outputs (`fill`
    /// gets the buffer holding them and must overwrite every value: a ranking loss, a value loss, PPO's).
    public enum HeadGradient {
        case crossEntropy(scale: Float)
        /// Cross-entropy with its own weight at every position (B·T of them): a loss on per-sequence sums of
        /// log-probs, such as DPO's, is one weight per sequence on its counted targets.
        case weightedCrossEntropy(weights: [Float])
        case given((UnsafeMutableBufferPointer<Float>) -> Void)
    }

    /// Adds into `gradients` the gradient of Σ lossScale · loss over the last forward's counted targets
    /// (lossScale = 1 / global target count gives the mean). Overwrites the logits.
    /// `gradientsReady(w)` is called as backward goes: every gradient at flat offset ≥ w is then final, so a
    /// data-parallel caller can start reducing it while the rest of backward runs.
    public func backward(lossScale: Float, gradientsReady: ((Int) -> Void)? = nil) throws {
        try backward(heads: [.lm: .crossEntropy(scale: lossScale)], gradientsReady: gradientsReady)
    }

    /// Adds into `gradients` the gradient of a loss on the heads' outputs: each head in `heads` starts the
    /// backward as its HeadGradient says; a head not named contributes nothing (its weights' gradient and its
    /// share of the trunk's are zero).
    public func backward(heads: [OutputHead: HeadGradient], gradientsReady: ((Int) -> Void)? = nil) throws {
        guard let a = activations, purpose.trains else {
            preconditionFailure("backward needs a training model and a forward")
        }
        let n = a.batch * a.seqLen
        for (kind, gradient) in heads {
            guard let i = config.heads.firstIndex(of: kind) else {
                preconditionFailure("the model has no \(kind.rawValue) head")
            }
            let outputs = headOutputs(i, a)
            switch gradient {
            case let .crossEntropy(scale):
                precondition(kind == .lm, "cross-entropy applies to the lm_head's logits, not \(kind.rawValue)")
                let (targets, V) = (a.targets, Int32(config.vocabSize))
                inParallel(units: n) { first, end, _ in
                    let rows = outputs + first * Int(V)
                    lm_cross_entropy_backward(rows, rows, targets + first, scale, Int32(end - first), V)
                }
            case let .weightedCrossEntropy(weights):
                precondition(kind == .lm && weights.count == n, "one weight per position of the lm_head's logits")
                let (targets, V) = (a.targets, Int(config.vocabSize))
                weights.withUnsafeBufferPointer { w in
                    inParallel(units: n) { first, end, _ in
                        for row in first..<end {
                            let logits = outputs + row * V
                            lm_cross_entropy_backward(logits, logits, targets + row, w[row], 1, Int32(V))
                        }
                    }
                }
            case let .given(fill):
                fill(UnsafeMutableBufferPointer(start: outputs, count: n * kind.rows(config)))
            }
        }
        try backwardFromHeadGradients(Set(heads.keys), gradientsReady: gradientsReady)
    }

    private func backwardFromHeadGradients(_ started: Set<OutputHead>, gradientsReady: ((Int) -> Void)?) throws {
        let a = activations!
        let c = config, d = Dims(c, a)
        let (N, C, F, Q, KV) = (d.N, d.C, d.F, d.Q, d.KV)
        let cosT = a.ptr(a.ropeCos), sinT = a.ptr(a.ropeSin)
        let dres = a.ptr(a.dres), dnorm = a.ptr(a.dnorm)
        func zero(_ offset: Int, _ count: Int) { a.ptr(offset).update(repeating: 0, count: count) }

        let (ph, gh) = backwardBases(c.nLayers + 1)
        zero(a.dnorm, d.nc)
        for (i, h) in layout.heads.enumerated() where started.contains(h.kind) {
            try matmulBackward(
                dnorm, gh + h.tensor.offset, headOutputs(i, a), a.ptr(a.normF), ph + h.tensor.offset, N, C,
                Int32(h.kind.rows(c)))
        }
        zero(a.dres, d.nc)
        lm_rmsnorm_backward(
            dres, gh + layout.finalNorm.offset, dnorm, a.ptr(a.residual[c.nLayers]), ph + layout.finalNorm.offset,
            a.ptr(a.rstdF), N, C)
        unitWeights?.backwardFinished(unit: c.nLayers + 1)
        gradientsReady?(layout.finalNorm.offset)
        // dres is the gradient of the residual stream: each block's output passes it straight to its input.
        for l in stride(from: c.nLayers - 1, through: 0, by: -1) {
            // Recompute: the shared block buffers hold the last layer's forward already; any other layer
            // runs its forward again from its kept input.
            let unit = ParameterLayout.unit(ofLayer: l)
            let (pb, gb) = backwardBases(unit)
            if purpose == .training(.layer) && l != c.nLayers - 1 { try forwardBlock(l, a, d, pb) }
            let s = a.block(l), x = a.ptr(a.residual[l])
            func w(_ t: LayerTensor) -> UnsafeMutablePointer<Float> { pb + layout.layer(l, t).offset }
            func dw(_ t: LayerTensor) -> UnsafeMutablePointer<Float> { gb + layout.layer(l, t).offset }
            // out = h + down(act)
            zero(a.dact, d.nf)
            try matmulBackward(a.ptr(a.dact), dw(.down), dres, a.ptr(s.act), w(.down), N, F, C)
            // act = silu(gate) · up
            zero(a.dgate, d.nf)
            zero(a.dup, d.nf)
            let (dgate, dup, dact, gate, up) = (a.ptr(a.dgate), a.ptr(a.dup), a.ptr(a.dact), a.ptr(s.gate), a.ptr(s.up))
            inParallel(units: Int(d.N)) { first, end, _ in
                let (offset, count) = (first * Int(d.F), (end - first) * Int(d.F))
                lm_swiglu_backward(dgate + offset, dup + offset, dact + offset, gate + offset, up + offset, count)
            }
            // gate = W_gate · n, up = W_up · n, n = rmsnorm(h)
            zero(a.dnorm, d.nc)
            try matmulBackward(dnorm, dw(.gate), a.ptr(a.dgate), a.ptr(s.norm2), w(.gate), N, C, F)
            try matmulBackward(dnorm, dw(.up), a.ptr(a.dup), a.ptr(s.norm2), w(.up), N, C, F)
            lm_rmsnorm_backward(dres, dw(.ffnNorm), dnorm, a.ptr(s.mid), w(.ffnNorm), a.ptr(s.rstd2), N, C)
            // h = x + o(attnOut)
            zero(a.dattnOut, d.nq)
            try matmulBackward(a.ptr(a.dattnOut), dw(.o), dres, a.ptr(s.attnOut), w(.o), N, Q, C)
            // attnOut = attention(q, k, v), q and k rotated
            zero(a.dq, d.nq)
            zero(a.dk, d.nkv)
            zero(a.dv, d.nkv)
            let (bq, bk) = (Int32(Self.attentionTiles.query), Int32(Self.attentionTiles.key))
            let (dq, dk, dv, dout) = (a.ptr(a.dq), a.ptr(a.dk), a.ptr(a.dv), a.ptr(a.dattnOut))
            let (out, lse, q, k, v) = (a.ptr(s.attnOut), a.ptr(s.lse), a.ptr(s.q), a.ptr(s.k), a.ptr(s.v))
            let units = lm_flash_attention_backward_units(d.B, d.G)
            if precision == .bf16 {
                let (scratch, stride) = attentionWorkspace(d)
                try KernelError.check(
                    inParallel(checking: units) { first, end, worker in
                        lm_flash_attention_backward_bf16(
                            dq, dk, dv, dout, out, lse, q, k, v, d.B, d.T, d.H, d.G, d.D, bq, bk, first, end,
                            scratch + worker * stride, stride)
                    }, "lm_flash_attention_backward_bf16", "(T \(d.T), head_dim \(d.D))")
            } else {
                inParallel(units: units) { first, end, _ in
                    lm_flash_attention_backward(
                        dq, dk, dv, dout, out, lse, q, k, v, d.B, d.T, d.H, d.G, d.D, bq, bk, first, end)
                }
            }
            lm_rope_backward(a.ptr(a.dq), cosT, sinT, d.B, d.T, d.H, d.D)
            lm_rope_backward(a.ptr(a.dk), cosT, sinT, d.B, d.T, d.G, d.D)
            // q, k, v = W · n, n = rmsnorm(x)
            zero(a.dnorm, d.nc)
            try matmulBackward(dnorm, dw(.q), a.ptr(a.dq), a.ptr(s.norm1), w(.q), N, C, Q)
            try matmulBackward(dnorm, dw(.k), a.ptr(a.dk), a.ptr(s.norm1), w(.k), N, C, KV)
            try matmulBackward(dnorm, dw(.v), a.ptr(a.dv), a.ptr(s.norm1), w(.v), N, C, KV)
            lm_rmsnorm_backward(dres, dw(.attentionNorm), dnorm, x, w(.attentionNorm), a.ptr(s.rstd1), N, C)
            unitWeights?.backwardFinished(unit: unit)
            gradientsReady?(layout.layer(l, .q).offset)
        }
        let (_, ge) = backwardBases(0)
        lm_embedding_backward(ge + layout.embedding.offset, dres, a.tokens, N, C)
        unitWeights?.backwardFinished(unit: 0)
        gradientsReady?(0)
    }
}
