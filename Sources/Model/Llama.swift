// LlamaModel: Llama 2's forward and backward over flat buffers, the llm.c way.
//
// Parameters live in one FloatBuffer and gradients in a second of the same layout; activations in one
// arena planned per batch shape. The block reads like the paper:
//     h   = x + attention(rmsnorm(x))        attention: GQA with rotary embeddings, causal
//     out = h + down(silu(gate(rmsnorm(h))) · up(rmsnorm(h)))
// What this is not: a trainer. It knows nothing of ranks, schedules or data; it computes a loss and
// adds gradients into `gradients` for whoever calls it.
import Kernels
import Support

public enum ModelError: Error, CustomStringConvertible, Equatable {
    case tokenOutOfRange(position: Int, token: Int32, vocabSize: Int)
    case targetOutOfRange(position: Int, target: Int32, vocabSize: Int)
    case sequenceTooLong(seqLen: Int, maxSeqLen: Int)
    case shapeMismatch(expected: Int, tokens: Int, targets: Int)

    public var description: String {
        switch self {
        case let .tokenOutOfRange(p, t, v): "input token \(t) at position \(p) is outside the vocabulary [0, \(v))"
        case let .targetOutOfRange(p, t, v):
            "target \(t) at position \(p) is outside the vocabulary [0, \(v)) and is not the ignore index \(LlamaModel.ignoreIndex)"
        case let .sequenceTooLong(t, m): "sequence length \(t) exceeds the model's max_seq_len \(m)"
        case let .shapeMismatch(e, a, b): "batch × seq_len = \(e) positions, but got \(a) tokens and \(b) targets"
        }
    }
}

/// What one forward pass measured: the summed loss and how many targets counted (ignore index excluded),
/// so that callers can normalise over micro-steps and ranks by the global count.
public struct ForwardResult: Sendable {
    public let lossSum: Double
    public let targetCount: Int
    public var meanLoss: Double { targetCount > 0 ? lossSum / Double(targetCount) : 0 }
}

public final class LlamaModel {
    /// Targets equal to this are not predicted (PyTorch's CrossEntropyLoss default).
    public static let ignoreIndex: Int32 = -100

    public let config: LlamaConfig
    public let layout: ParameterLayout
    public let parameters: FloatBuffer
    public let gradients: FloatBuffer
    public private(set) var activations: ActivationArena?

    public init(config: LlamaConfig) throws {
        try config.validate()
        self.config = config
        layout = ParameterLayout(config: config)
        parameters = FloatBuffer(count: layout.count)
        gradients = FloatBuffer(count: layout.count)
    }

    /// Hugging Face's initialisation: N(0, std) for every matrix, ones for the RMSNorm gains.
    public func initialize(seed: UInt64, std: Double = 0.02) {
        var rng = SplitMix64(seed: seed)
        for spec in layout.tensors {
            let values = parameters.slice(spec.offset, spec.count)
            if spec.decays {
                for i in values.indices { values[i] = Float(rng.nextGaussian() * std) }
            } else {
                values.update(repeating: 1)
            }
        }
    }

    /// Plans the activation arena for (batch, seqLen); a no-op when the shape is already planned.
    public func prepare(batch: Int, seqLen: Int) throws {
        if seqLen > config.maxSeqLen { throw ModelError.sequenceTooLong(seqLen: seqLen, maxSeqLen: config.maxSeqLen) }
        if let a = activations, a.batch == batch, a.seqLen == seqLen { return }
        activations = nil  // free the old plan before allocating the new one
        activations = ActivationArena(config: config, batch: batch, seqLen: seqLen)
    }

    @inline(__always) private func p(_ spec: TensorSpec) -> UnsafeMutablePointer<Float> { parameters.pointer + spec.offset }
    @inline(__always) private func g(_ spec: TensorSpec) -> UnsafeMutablePointer<Float> { gradients.pointer + spec.offset }

    /// Logits (B·T, V) of the last forward; the backward overwrites them with their gradient.
    public var logits: UnsafeBufferPointer<Float> {
        let a = activations!
        return UnsafeBufferPointer(start: a.ptr(a.logits), count: a.batch * a.seqLen * config.outputSize)
    }

    /// Forward pass over tokens (B, T) row-major with next-token targets (B, T), ignoreIndex where no loss.
    public func forward(tokens: [Int32], targets: [Int32], batch B: Int, seqLen T: Int) throws -> ForwardResult {
        guard tokens.count == B * T, targets.count == B * T else {
            throw ModelError.shapeMismatch(expected: B * T, tokens: tokens.count, targets: targets.count)
        }
        let V = config.vocabSize, outputs = config.outputSize
        var counted = 0
        for i in 0..<(B * T) {
            if tokens[i] < 0 || Int(tokens[i]) >= V { throw ModelError.tokenOutOfRange(position: i, token: tokens[i], vocabSize: V) }
            if targets[i] == LlamaModel.ignoreIndex { continue }
            if targets[i] < 0 || Int(targets[i]) >= outputs {
                throw ModelError.targetOutOfRange(position: i, target: targets[i], vocabSize: outputs)
            }
            counted += 1
        }
        try prepare(batch: B, seqLen: T)
        let a = activations!
        tokens.withUnsafeBufferPointer { a.tokens.update(from: $0.baseAddress!, count: B * T) }
        targets.withUnsafeBufferPointer { a.targets.update(from: $0.baseAddress!, count: B * T) }
        runForward(a)
        let losses = UnsafeBufferPointer(start: a.ptr(a.losses), count: B * T)
        var sum = 0.0
        for l in losses { sum += Double(l) }
        return ForwardResult(lossSum: sum, targetCount: counted)
    }

    private func runForward(_ a: ActivationArena) {
        let c = config
        let B = Int32(a.batch), T = Int32(a.seqLen), N = B * T
        let C = Int32(c.dim), F = Int32(c.ffnHiddenSize), Q = Int32(c.qDim), KV = Int32(c.kvDim)
        let H = Int32(c.nHeads), G = Int32(c.nKVHeads), D = Int32(c.headDim), V = Int32(c.outputSize)
        let eps = Float(c.normEps)
        let cosT = a.ptr(a.ropeCos), sinT = a.ptr(a.ropeSin)

        lm_embedding_forward(a.ptr(a.residual[0]), a.tokens, p(layout.embedding), N, C)
        for l in 0..<c.nLayers {
            let s = a.layers[l], x = a.ptr(a.residual[l]), out = a.ptr(a.residual[l + 1])
            func w(_ t: LayerTensor) -> UnsafeMutablePointer<Float> { p(layout.layer(l, t)) }
            // h = x + o(attention(rope(q(n)), rope(k(n)), v(n))), n = rmsnorm(x)
            lm_rmsnorm_forward(a.ptr(s.norm1), a.ptr(s.rstd1), x, w(.attentionNorm), N, C, eps)
            lm_matmul_forward(a.ptr(s.q), a.ptr(s.norm1), w(.q), N, C, Q, 0)
            lm_matmul_forward(a.ptr(s.k), a.ptr(s.norm1), w(.k), N, C, KV, 0)
            lm_matmul_forward(a.ptr(s.v), a.ptr(s.norm1), w(.v), N, C, KV, 0)
            lm_rope_forward(a.ptr(s.q), cosT, sinT, B, T, H, D)
            lm_rope_forward(a.ptr(s.k), cosT, sinT, B, T, G, D)
            lm_attention_forward(a.ptr(s.attnOut), a.ptr(s.att), a.ptr(s.q), a.ptr(s.k), a.ptr(s.v), B, T, H, G, D)
            a.ptr(s.mid).update(from: x, count: Int(N * C))
            lm_matmul_forward(a.ptr(s.mid), a.ptr(s.attnOut), w(.o), N, Q, C, 1)
            // out = h + down(silu(gate(n)) · up(n)), n = rmsnorm(h)
            lm_rmsnorm_forward(a.ptr(s.norm2), a.ptr(s.rstd2), a.ptr(s.mid), w(.ffnNorm), N, C, eps)
            lm_matmul_forward(a.ptr(s.gate), a.ptr(s.norm2), w(.gate), N, C, F, 0)
            lm_matmul_forward(a.ptr(s.up), a.ptr(s.norm2), w(.up), N, C, F, 0)
            lm_swiglu_forward(a.ptr(s.act), a.ptr(s.gate), a.ptr(s.up), Int(N * F))
            out.update(from: a.ptr(s.mid), count: Int(N * C))
            lm_matmul_forward(out, a.ptr(s.act), w(.down), N, F, C, 1)
        }
        lm_rmsnorm_forward(a.ptr(a.normF), a.ptr(a.rstdF), a.ptr(a.residual[c.nLayers]), p(layout.finalNorm), N, C, eps)
        lm_matmul_forward(a.ptr(a.logits), a.ptr(a.normF), p(layout.lmHead), N, C, V, 0)
        lm_cross_entropy_forward(a.ptr(a.losses), a.ptr(a.logits), a.targets, N, V)
    }

    /// Adds into `gradients` the gradient of Σ lossScale · loss over the last forward's counted targets
    /// (lossScale = 1 / global target count gives the mean). Overwrites the logits.
    /// `gradientsReady(w)` is called as backward goes: every gradient at flat offset ≥ w is then final, so a
    /// data-parallel caller can start reducing it while the rest of backward runs.
    public func backward(lossScale: Float, gradientsReady: ((Int) -> Void)? = nil) {
        guard let a = activations else { preconditionFailure("backward before forward") }
        let N = Int32(a.batch * a.seqLen), V = Int32(config.outputSize)
        // logits = lm_head(rmsnorm(x_L)); dlogits overwrite the logits in place
        lm_cross_entropy_backward(a.ptr(a.logits), a.ptr(a.logits), a.targets, lossScale, N, V)
        backwardFromLogitGradients(gradientsReady: gradientsReady)
    }

    /// Backward from gradients the caller writes into the logits buffer (B·T, outputSize), for losses other
    /// than next-token cross-entropy (the reward model's ranking loss). `fill` gets the buffer holding the
    /// last forward's logits and must overwrite every value.
    public func backward(settingLogitGradients fill: (UnsafeMutableBufferPointer<Float>) -> Void,
                         gradientsReady: ((Int) -> Void)? = nil) {
        guard let a = activations else { preconditionFailure("backward before forward") }
        fill(UnsafeMutableBufferPointer(start: a.ptr(a.logits), count: a.batch * a.seqLen * config.outputSize))
        backwardFromLogitGradients(gradientsReady: gradientsReady)
    }

    private func backwardFromLogitGradients(gradientsReady: ((Int) -> Void)?) {
        let a = activations!
        let c = config
        let B = Int32(a.batch), T = Int32(a.seqLen), N = B * T
        let C = Int32(c.dim), F = Int32(c.ffnHiddenSize), Q = Int32(c.qDim), KV = Int32(c.kvDim)
        let H = Int32(c.nHeads), G = Int32(c.nKVHeads), D = Int32(c.headDim), V = Int32(c.outputSize)
        let cosT = a.ptr(a.ropeCos), sinT = a.ptr(a.ropeSin)
        let dres = a.ptr(a.dres), dnorm = a.ptr(a.dnorm)
        func zero(_ offset: Int, _ count: Int32) { a.ptr(offset).update(repeating: 0, count: Int(count)) }

        zero(a.dnorm, N * C)
        lm_matmul_backward(dnorm, g(layout.lmHead), a.ptr(a.logits), a.ptr(a.normF), p(layout.lmHead), N, C, V)
        zero(a.dres, N * C)
        lm_rmsnorm_backward(dres, g(layout.finalNorm), dnorm, a.ptr(a.residual[c.nLayers]), p(layout.finalNorm),
                            a.ptr(a.rstdF), N, C)
        gradientsReady?(min(layout.finalNorm.offset, layout.lmHead.offset))
        // dres is the gradient of the residual stream: each block's output passes it straight to its input.
        for l in stride(from: c.nLayers - 1, through: 0, by: -1) {
            let s = a.layers[l], x = a.ptr(a.residual[l])
            func w(_ t: LayerTensor) -> UnsafeMutablePointer<Float> { p(layout.layer(l, t)) }
            func dw(_ t: LayerTensor) -> UnsafeMutablePointer<Float> { g(layout.layer(l, t)) }
            // out = h + down(act)
            zero(a.dact, N * F)
            lm_matmul_backward(a.ptr(a.dact), dw(.down), dres, a.ptr(s.act), w(.down), N, F, C)
            // act = silu(gate) · up
            zero(a.dgate, N * F)
            zero(a.dup, N * F)
            lm_swiglu_backward(a.ptr(a.dgate), a.ptr(a.dup), a.ptr(a.dact), a.ptr(s.gate), a.ptr(s.up), Int(N * F))
            // gate = W_gate · n, up = W_up · n, n = rmsnorm(h)
            zero(a.dnorm, N * C)
            lm_matmul_backward(dnorm, dw(.gate), a.ptr(a.dgate), a.ptr(s.norm2), w(.gate), N, C, F)
            lm_matmul_backward(dnorm, dw(.up), a.ptr(a.dup), a.ptr(s.norm2), w(.up), N, C, F)
            lm_rmsnorm_backward(dres, dw(.ffnNorm), dnorm, a.ptr(s.mid), w(.ffnNorm), a.ptr(s.rstd2), N, C)
            // h = x + o(attnOut)
            zero(a.dattnOut, N * Q)
            lm_matmul_backward(a.ptr(a.dattnOut), dw(.o), dres, a.ptr(s.attnOut), w(.o), N, Q, C)
            // attnOut = attention(q, k, v), q and k rotated
            zero(a.dq, N * Q)
            zero(a.dk, N * KV)
            zero(a.dv, N * KV)
            lm_attention_backward(a.ptr(a.dq), a.ptr(a.dk), a.ptr(a.dv), a.ptr(a.datt), a.ptr(a.dattnOut),
                                  a.ptr(s.att), a.ptr(s.q), a.ptr(s.k), a.ptr(s.v), B, T, H, G, D)
            lm_rope_backward(a.ptr(a.dq), cosT, sinT, B, T, H, D)
            lm_rope_backward(a.ptr(a.dk), cosT, sinT, B, T, G, D)
            // q, k, v = W · n, n = rmsnorm(x)
            zero(a.dnorm, N * C)
            lm_matmul_backward(dnorm, dw(.q), a.ptr(a.dq), a.ptr(s.norm1), w(.q), N, C, Q)
            lm_matmul_backward(dnorm, dw(.k), a.ptr(a.dk), a.ptr(s.norm1), w(.k), N, C, KV)
            lm_matmul_backward(dnorm, dw(.v), a.ptr(a.dv), a.ptr(s.norm1), w(.v), N, C, KV)
            lm_rmsnorm_backward(dres, dw(.attentionNorm), dnorm, x, w(.attentionNorm), a.ptr(s.rstd1), N, C)
            gradientsReady?(layout.layer(l, .q).offset)
        }
        lm_embedding_backward(g(layout.embedding), dres, a.tokens, N, C)
        gradientsReady?(0)
    }

    // MARK: - Accounting

    /// Training FLOPs per token, PaLM's count as llm.c and nanoGPT use it: 6·N for the matmuls (N without the
    /// embedding table) plus 6·L·T·D for attention scores and values (T the sequence length, D = dim).
    public func flopsPerToken(seqLen: Int) -> Double {
        // (A reward model's head is one row: its FLOPs drop out of N with the vocabulary.)
        6 * Double(layout.nonEmbeddingCount) + 6 * Double(config.nLayers * seqLen * config.dim)
    }
}
