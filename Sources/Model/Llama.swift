// LlamaModel: Llama 2's forward and backward over flat buffers, the llm.c way.
//
// Parameters live in one FloatBuffer and gradients in a second of the same layout; activations in one
// arena planned per batch shape. The block reads like the paper:
//     h   = x + attention(rmsnorm(x))        attention: GQA with rotary embeddings, causal
//     out = h + down(silu(gate(rmsnorm(h))) · up(rmsnorm(h)))
// What this is not: a trainer. It knows nothing of ranks, schedules or data; it computes a loss and
// adds gradients into `gradients` for whoever calls it.
import Dispatch
import Kernels
import Support

public enum ModelError: Error, CustomStringConvertible, Equatable {
    case tokenOutOfRange(position: Int, token: Int32, vocabSize: Int)
    case targetOutOfRange(position: Int, target: Int32, vocabSize: Int)
    case sequenceTooLong(seqLen: Int, maxSeqLen: Int)
    case shapeMismatch(expected: Int, tokens: Int, targets: Int)
    case targetWithoutLanguageHead(position: Int, target: Int32)

    public var description: String {
        switch self {
        case let .tokenOutOfRange(p, t, v): "input token \(t) at position \(p) is outside the vocabulary [0, \(v))"
        case let .targetOutOfRange(p, t, v):
            "target \(t) at position \(p) is outside the vocabulary [0, \(v)) and is not the ignore index \(LlamaModel.ignoreIndex)"
        case let .sequenceTooLong(t, m): "sequence length \(t) exceeds the model's max_seq_len \(m)"
        case let .shapeMismatch(e, a, b): "batch × seq_len = \(e) positions, but got \(a) tokens and \(b) targets"
        case let .targetWithoutLanguageHead(p, t):
            "target \(t) at position \(p), but the model has no lm_head to predict it; give \(LlamaModel.ignoreIndex) everywhere"
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

/// Where a sharded model's units come from (ZeRO-2/3, implemented by the trainer): the model asks for a unit's
/// parameters before using them and reports when it is done, so the provider can gather, prefetch, reduce and
/// release. Pointers address the unit's own range: index 0 is the unit's first flat offset.
public protocol UnitWeights: AnyObject {
    /// Unit u's parameters for its forward.
    func parametersForForward(unit: Int) -> UnsafeMutablePointer<Float>
    func forwardFinished(unit: Int)
    /// Unit u's parameters and a zeroed gradient buffer for it, for its backward (and its recomputation).
    func beginBackward(unit: Int) -> (parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>)
    /// Unit u's gradients are final for this micro-step.
    func backwardFinished(unit: Int)
}

public final class LlamaModel {
    /// Targets equal to this are not predicted (PyTorch's CrossEntropyLoss default).
    public static let ignoreIndex: Int32 = -100
    /// Flash attention's query and key tile rows, measured with `llama-train bench --attention`: at 2048
    /// tokens, 64 × 64 was within 2% of the best of 32–128 at head_dim 64 and 128, and 32 was 10% slower.
    public static let attentionTiles = (query: 64, key: 64)

    public let config: LlamaConfig
    public let layout: ParameterLayout
    public let purpose: ModelPurpose
    /// What `parameters` holds: all of the layout, or this rank's pieces when parameters are sharded.
    public let parameterPieces: HeldPieces
    public let parameters: FloatBuffer
    /// What `gradients` holds (all, this rank's pieces when gradients are sharded, none for inference).
    public let gradientPieces: HeldPieces
    public let gradients: FloatBuffer
    public private(set) var activations: ActivationArena?
    /// Set when units come from a sharding provider; nil reads and writes the buffers above directly.
    public var unitWeights: UnitWeights?
    /// Threads the attention units, the row-wise kernels and the rounding to bf16 spread over (the rank's
    /// --threads; the matmuls thread inside OpenBLAS and oneDNN). While they run, OpenBLAS
    /// is held at one thread; that global switch is only safe when nothing else in the process calls BLAS
    /// meanwhile, which holds for a training rank (one model, one compute thread) but not for tests that run
    /// several models at once, so it is opt-in.
    public var threads = 1
    /// The precision of every matmul: fp32 (OpenBLAS sgemm) or bf16 (oneDNN, fp32 accumulation). Everything
    /// else (norm statistics, softmax, rotary, the loss, gradients, the optimizer) stays fp32 either way.
    public var precision: Precision = .fp32
    /// The bf16 roundings of the two inputs of the matmul in flight.
    private let bf16Scratch = [AlignedScratch(), AlignedScratch()]
    /// oneDNN's primitives for this model's bf16 matmuls, made on the first one.
    private var matmuls: OneDNNMatmuls?
    /// The bf16 attention tiles' packed operands: one slice per thread.
    private let attentionScratch = AlignedScratch()
    /// Where each head's outputs start in the arena's head outputs, in rows per position (layout order).
    private let headRowOffsets: [Int]

    /// A model for `purpose`: training models hold gradients and a training arena; inference models hold
    /// only the parameters and a forward-only arena (about 1× the model's bytes plus the working set). Sharded
    /// training gives the pieces this rank keeps, and a `unitWeights` provider for the rest.
    public init(
        config: LlamaConfig, purpose: ModelPurpose = .training(.none), parameterPieces: HeldPieces? = nil,
        gradientPieces: HeldPieces? = nil
    ) throws {
        try config.validate()
        self.config = config
        self.purpose = purpose
        layout = ParameterLayout(config: config)
        self.parameterPieces = parameterPieces ?? .whole(layout.count)
        self.gradientPieces = gradientPieces ?? .whole(purpose.trains ? layout.count : 0)
        parameters = FloatBuffer(count: self.parameterPieces.count)
        gradients = FloatBuffer(count: self.gradientPieces.count)
        headRowOffsets = config.heads.indices.map { i in config.heads[..<i].reduce(0) { $0 + $1.rows(config) } }
    }

    /// Hugging Face's initialisation: N(0, std) for every matrix, ones for the RMSNorm gains. One random
    /// stream runs over the matrices in layout order (two draws per value), and since SplitMix64 is a counter
    /// each kept piece starts its part of the stream in O(1): a rank draws only what it keeps (O(P/N) under
    /// sharding, on `threads` threads), and every rank's part of a sharded model equals the same part of a
    /// replicated one, for any world size and mode.
    /// `only` names the tensors to draw (a head a starting model lacks); the others are left as they are.
    public func initialize(seed: UInt64, std: Double = 0.02, only: Set<String>? = nil) {
        var drawnBefore = 0  // Gaussians the stream spends on the matrices before this tensor
        var work: [(global: Range<Int>, local: Int, draws: Int?)] = []
        for spec in layout.tensors {
            let tensor = spec.offset..<(spec.offset + spec.count)
            for part in parameterPieces.parts(of: tensor) where only?.contains(spec.name) ?? true {
                let skipped = spec.decays ? drawnBefore + part.range.lowerBound - spec.offset : nil
                work.append((part.range, part.local, skipped))
            }
            if spec.decays { drawnBefore += spec.count }
        }
        // Chunks of at most 1M values, each positioned on its own: any split gives the same bits.
        let chunk = 1 << 20
        let chunks = work.flatMap { w in
            stride(from: 0, to: w.global.count, by: chunk).map { o in
                (count: min(chunk, w.global.count - o), local: w.local + o, draws: w.draws.map { $0 + o })
            }
        }
        nonisolated(unsafe) let target = parameters.pointer
        let workers = max(1, min(threads, chunks.count))
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            for c in stride(from: worker, to: chunks.count, by: workers) {
                let (count, local, draws) = chunks[c]
                guard let draws else {
                    (target + local).update(repeating: 1, count: count)
                    continue
                }
                var rng = SplitMix64(seed: seed)
                rng.skip(2 * UInt64(draws))
                for i in 0..<count { target[local + i] = Float(rng.nextGaussian() * std) }
            }
        }
    }

    /// Refuses a NaN or infinity in the parameters this model holds, naming the tensor, the index within it
    /// and `source` (where they were read from).
    public func checkFinite(source: String) throws {
        try layout.checkFinite(parameters, held: parameterPieces, source: source)
    }

    /// Unit u's parameter base for a forward (pointer + flat offset addresses a tensor of the unit): gathered by
    /// the unitWeights provider under sharding, which `unitWeights?.forwardFinished(unit:)` then releases.
    public func parameterBase(forwardOf u: Int) -> UnsafeMutablePointer<Float> {
        if let provider = unitWeights { return provider.parametersForForward(unit: u) - layout.units[u].lowerBound }
        precondition(parameterPieces.isWhole(of: layout.count), "sharded parameters need a unitWeights provider")
        return parameters.pointer
    }

    /// Each unit's parameters in a forward's order (gathered under sharding, released after `body`): a forward's
    /// gathers without its compute. `base + offset` addresses a tensor of unit `u`.
    public func forEachUnitForward(_ body: (_ unit: Int, _ base: UnsafeMutablePointer<Float>) -> Void) {
        for u in layout.units.indices {
            body(u, parameterBase(forwardOf: u))
            unitWeights?.forwardFinished(unit: u)
        }
    }

    func backwardBases(_ u: Int) -> (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) {
        if let provider = unitWeights {
            let (p, g) = provider.beginBackward(unit: u)
            return (p - layout.units[u].lowerBound, g - layout.units[u].lowerBound)
        }
        precondition(
            parameterPieces.isWhole(of: layout.count) && gradientPieces.isWhole(of: layout.count),
            "sharded parameters or gradients need a unitWeights provider")
        return (parameters.pointer, gradients.pointer)
    }

    /// Plans the activation arena for (batch, seqLen); a no-op when the shape is already planned.
    public func prepare(batch: Int, seqLen: Int) throws {
        if seqLen > config.maxSeqLen { throw ModelError.sequenceTooLong(seqLen: seqLen, maxSeqLen: config.maxSeqLen) }
        if let a = activations, a.batch == batch, a.seqLen == seqLen { return }
        activations = nil  // free the old plan before allocating the new one
        activations = ActivationArena(config: config, batch: batch, seqLen: seqLen, purpose: purpose)
    }

    /// Head `kind`'s outputs (B·T, rows) of the last forward: logits for `lm_head`, one scalar per position for
    /// `score` and `value`. A backward overwrites them with their gradient.
    public func outputs(of kind: OutputHead) -> UnsafeBufferPointer<Float> {
        guard let i = config.heads.firstIndex(of: kind) else {
            preconditionFailure("the model has no \(kind.rawValue) head")
        }
        let a = activations!, n = a.batch * a.seqLen
        return UnsafeBufferPointer(start: a.ptr(a.logits) + n * headRowOffsets[i], count: n * kind.rows(config))
    }

    /// The last forward's cross-entropy at each of its B·T positions, −log p(target) (0 where the target is
    /// ignored): summed over a sequence's counted targets, minus its log-likelihood.
    public var positionLosses: UnsafeBufferPointer<Float> {
        let a = activations!
        return UnsafeBufferPointer(start: a.ptr(a.losses), count: a.batch * a.seqLen)
    }

    /// The first head's outputs: a language model's logits (B·T, V), a reward model's scores.
    public var logits: UnsafeBufferPointer<Float> {
        guard let first = config.heads.first else { preconditionFailure("the model has no heads, so no outputs") }
        return outputs(of: first)
    }

    /// Forward pass over tokens (B, T) row-major with next-token targets (B, T), ignoreIndex where no loss.
    public func forward(tokens: [Int32], targets: [Int32], batch B: Int, seqLen T: Int) throws -> ForwardResult {
        guard tokens.count == B * T, targets.count == B * T else {
            throw ModelError.shapeMismatch(expected: B * T, tokens: tokens.count, targets: targets.count)
        }
        let V = config.vocabSize, predicts = config.heads.contains(.lm)
        var counted = 0
        for i in 0..<(B * T) {
            if tokens[i] < 0 || Int(tokens[i]) >= V {
                throw ModelError.tokenOutOfRange(position: i, token: tokens[i], vocabSize: V)
            }
            if targets[i] == LlamaModel.ignoreIndex { continue }
            if !predicts { throw ModelError.targetWithoutLanguageHead(position: i, target: targets[i]) }
            if targets[i] < 0 || Int(targets[i]) >= V {
                throw ModelError.targetOutOfRange(position: i, target: targets[i], vocabSize: V)
            }
            counted += 1
        }
        try prepare(batch: B, seqLen: T)
        let a = activations!
        tokens.withUnsafeBufferPointer { a.tokens.update(from: $0.baseAddress!, count: B * T) }
        targets.withUnsafeBufferPointer { a.targets.update(from: $0.baseAddress!, count: B * T) }
        try runForward(a)
        let losses = UnsafeBufferPointer(start: a.ptr(a.losses), count: B * T)
        var sum = 0.0
        for l in losses { sum += Double(l) }
        return ForwardResult(lossSum: sum, targetCount: counted)
    }

    /// The shapes every kernel call takes, as C ints (each bounded by LlamaConfig.validate and the plan).
    struct Dims {
        let B, T, N, C, F, Q, KV, H, G, D, V: Int32
        /// Element counts, in Int: N·C and friends can pass 2^31 long before any single dimension does.
        let nc, nf, nq, nkv: Int

        init(_ c: LlamaConfig, _ a: ActivationArena) {
            (B, T) = (Int32(a.batch), Int32(a.seqLen))
            N = B * T
            (C, F, Q, KV) = (Int32(c.dim), Int32(c.ffnHiddenSize), Int32(c.qDim), Int32(c.kvDim))
            (H, G, D, V) = (Int32(c.nHeads), Int32(c.nKVHeads), Int32(c.headDim), Int32(c.vocabSize))
            let rows = a.batch * a.seqLen
            (nc, nf, nq, nkv) = (rows * c.dim, rows * c.ffnHiddenSize, rows * c.qDim, rows * c.kvDim)
        }
    }

    private func runForward(_ a: ActivationArena) throws {
        let c = config, d = Dims(c, a), head = c.nLayers + 1
        let pe = parameterBase(forwardOf: 0)
        lm_embedding_forward(a.ptr(a.residual[0]), a.tokens, pe + layout.embedding.offset, d.N, d.C)
        unitWeights?.forwardFinished(unit: 0)
        for l in 0..<c.nLayers {
            let u = ParameterLayout.unit(ofLayer: l)
            try forwardBlock(l, a, d, parameterBase(forwardOf: u))
            unitWeights?.forwardFinished(unit: u)
        }
        let ph = parameterBase(forwardOf: head)
        rmsnormForward(
            a.ptr(a.normF), a.ptr(a.rstdF), a.ptr(a.residual[c.nLayers]), ph + layout.finalNorm.offset, d,
            Float(c.normEps))
        for (i, h) in layout.heads.enumerated() {
            try matmulForward(
                headOutputs(i, a), a.ptr(a.normF), ph + h.tensor.offset, d.N, d.C, Int32(h.kind.rows(c)), 0)
        }
        unitWeights?.forwardFinished(unit: head)
        let losses = a.ptr(a.losses)
        guard let lm = c.heads.firstIndex(of: .lm) else { return losses.update(repeating: 0, count: Int(d.N)) }
        let (logits, targets, V) = (headOutputs(lm, a), a.targets, Int(d.V))
        inParallel(units: Int(d.N)) { first, end, _ in
            lm_cross_entropy_forward(losses + first, logits + first * V, targets + first, Int32(end - first), d.V)
        }
    }

    /// Head i's outputs (N, rows) in the arena.
    func headOutputs(_ i: Int, _ a: ActivationArena) -> UnsafeMutablePointer<Float> {
        a.ptr(a.logits) + a.batch * a.seqLen * headRowOffsets[i]
    }

    /// Block l from residual[l] to residual[l + 1], keeping its activations in block(l). The backward's
    /// recomputation calls exactly this, so recomputed activations equal the first ones bit for bit.
    func forwardBlock(_ l: Int, _ a: ActivationArena, _ d: Dims, _ base: UnsafeMutablePointer<Float>) throws {
        let s = a.block(l), x = a.ptr(a.residual[l]), out = a.ptr(a.residual[l + 1])
        let eps = Float(config.normEps), cosT = a.ptr(a.ropeCos), sinT = a.ptr(a.ropeSin)
        func w(_ t: LayerTensor) -> UnsafeMutablePointer<Float> { base + layout.layer(l, t).offset }
        // h = x + o(attention(rope(q(n)), rope(k(n)), v(n))), n = rmsnorm(x)
        rmsnormForward(a.ptr(s.norm1), a.ptr(s.rstd1), x, w(.attentionNorm), d, eps)
        try matmulForward(a.ptr(s.q), a.ptr(s.norm1), w(.q), d.N, d.C, d.Q, 0)
        try matmulForward(a.ptr(s.k), a.ptr(s.norm1), w(.k), d.N, d.C, d.KV, 0)
        try matmulForward(a.ptr(s.v), a.ptr(s.norm1), w(.v), d.N, d.C, d.KV, 0)
        lm_rope_forward(a.ptr(s.q), cosT, sinT, d.B, d.T, d.H, d.D)
        lm_rope_forward(a.ptr(s.k), cosT, sinT, d.B, d.T, d.G, d.D)
        let (bq, bk) = (Int32(Self.attentionTiles.query), Int32(Self.attentionTiles.key))
        let (attnOut, lse, q, k, v) = (a.ptr(s.attnOut), a.ptr(s.lse), a.ptr(s.q), a.ptr(s.k), a.ptr(s.v))
        if precision == .bf16 {
            let (scratch, stride) = attentionWorkspace(d)
            try KernelError.check(
                inParallel(checking: lm_flash_attention_forward_units(d.B, d.T, d.H, bq)) { first, end, worker in
                    lm_flash_attention_forward_bf16(
                        attnOut, lse, q, k, v, d.B, d.T, d.H, d.G, d.D, bq, bk, first, end,
                        scratch + worker * stride, stride)
                }, "lm_flash_attention_forward_bf16", "(T \(d.T), head_dim \(d.D))")
        } else {
            inParallel(units: lm_flash_attention_forward_units(d.B, d.T, d.H, bq)) { first, end, _ in
                lm_flash_attention_forward(attnOut, lse, q, k, v, d.B, d.T, d.H, d.G, d.D, bq, bk, first, end)
            }
        }
        a.ptr(s.mid).update(from: x, count: d.nc)
        try matmulForward(a.ptr(s.mid), a.ptr(s.attnOut), w(.o), d.N, d.Q, d.C, 1)
        // out = h + down(silu(gate(n)) · up(n)), n = rmsnorm(h)
        rmsnormForward(a.ptr(s.norm2), a.ptr(s.rstd2), a.ptr(s.mid), w(.ffnNorm), d, eps)
        try matmulForward(a.ptr(s.gate), a.ptr(s.norm2), w(.gate), d.N, d.C, d.F, 0)
        try matmulForward(a.ptr(s.up), a.ptr(s.norm2), w(.up), d.N, d.C, d.F, 0)
        let (act, gate, up) = (a.ptr(s.act), a.ptr(s.gate), a.ptr(s.up))
        inParallel(units: Int(d.N)) { first, end, _ in
            let (offset, count) = (first * Int(d.F), (end - first) * Int(d.F))
            lm_swiglu_forward(act + offset, gate + offset, up + offset, count)
        }
        out.update(from: a.ptr(s.mid), count: d.nc)
        try matmulForward(out, a.ptr(s.act), w(.down), d.N, d.F, d.C, 1)
    }

    private func matmulForward(
        _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
        _ n: Int32, _ c: Int32, _ oc: Int32, _ accumulate: Int32
    ) throws {
        guard precision == .bf16 else { return lm_matmul_forward(out, inp, weight, n, c, oc, accumulate) }
        // out (n,oc) = inp (n,c) · weight (oc,c)ᵀ
        let x = rounded(0, inp, Int(n) * Int(c)), w = rounded(1, weight, Int(oc) * Int(c))
        try bf16Matmuls().multiply(
            out, x, w, m: Int(n), n: Int(oc), k: Int(c), transA: false, transB: true, accumulate: accumulate != 0)
    }

    func matmulBackward(
        _ dinp: UnsafeMutablePointer<Float>?, _ dweight: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>,
        _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ n: Int32, _ c: Int32, _ oc: Int32
    ) throws {
        guard precision == .bf16 else { return lm_matmul_backward(dinp, dweight, dout, inp, weight, n, c, oc) }
        let g = rounded(0, dout, Int(n) * Int(oc)), engine = try bf16Matmuls()
        if let dinp {
            // dinp (n,c) += dout (n,oc) · weight (oc,c)
            let w = rounded(1, weight, Int(oc) * Int(c))
            try engine.multiply(
                dinp, g, w, m: Int(n), n: Int(c), k: Int(oc), transA: false, transB: false, accumulate: true)
        }
        // dweight (oc,c) += doutᵀ (oc,n) · inp (n,c)
        let x = rounded(1, inp, Int(n) * Int(c))
        try engine.multiply(
            dweight, g, x, m: Int(oc), n: Int(c), k: Int(n), transA: true, transB: false, accumulate: true)
    }

    private func bf16Matmuls() throws -> OneDNNMatmuls {
        if let matmuls { return matmuls }
        let made = try OneDNNMatmuls()
        matmuls = made
        return made
    }

    /// The bf16 attention kernels' scratch: one 64-byte aligned slice per thread, and the slice's bytes.
    func attentionWorkspace(_ d: Dims) -> (UnsafeMutableRawPointer, Int) {
        let bytes = lm_flash_attention_bf16_scratch_bytes(
            d.T, d.D, Int32(Self.attentionTiles.query), Int32(Self.attentionTiles.key))
        let stride = (bytes + 63) / 64 * 64
        return (attentionScratch.reserve(stride * max(1, threads)), stride)
    }

    /// `count` values of `x` rounded to bf16 into scratch slot 0 or 1 (grown as needed), spread over the
    /// threads: every matmul input, weights included, is rounded just before its product, so a weight's bf16
    /// copy is always the rounding of its current fp32 master.
    private func rounded(_ slot: Int, _ x: UnsafePointer<Float>, _ count: Int) -> UnsafePointer<UInt16> {
        let out = bf16Scratch[slot].reserve(2 * count).bindMemory(to: UInt16.self, capacity: count)
        let chunk = 1 << 16
        inParallel(units: (count + chunk - 1) / chunk) { first, end, _ in
            let lo = first * chunk, hi = min(end * chunk, count)
            lm_to_bf16(out + lo, x + lo, hi - lo)
        }
        return UnsafePointer(out)
    }

    /// RMSNorm's forward, rows spread over the threads.
    private func rmsnormForward(
        _ out: UnsafeMutablePointer<Float>, _ rstd: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
        _ weight: UnsafePointer<Float>, _ d: Dims, _ eps: Float
    ) {
        let width = Int(d.C)
        inParallel(units: Int(d.N)) { first, end, _ in
            lm_rmsnorm_forward(
                out + first * width, rstd + first, inp + first * width, weight, Int32(end - first), d.C, eps)
        }
    }

    /// Runs `body` over [0, units) split into one contiguous range per thread (the rank's --threads): the
    /// attention units, the rows of the row-wise kernels (cross-entropy, SwiGLU, RMSNorm's forward) and chunks
    /// of the bf16 rounding. Each unit is computed by exactly one call, so the result does not depend on the
    /// number of threads; the third argument is the worker's index (its slice of any per-thread scratch). The
    /// fp32 attention tiles are single-threaded sgemm calls, so OpenBLAS is held at one thread while units run
    /// on ours.
    func inParallel(units: Int, _ body: (Int, Int, Int) -> Void) {
        _ = inParallel(checking: units) { first, end, worker -> Int32 in
            body(first, end, worker)
            return Int32(LM_OK)
        }
    }

    /// The same for kernels that return a status: the first worker's failure, or LM_OK.
    func inParallel(checking units: Int, _ body: (Int, Int, Int) -> Int32) -> Int32 {
        let threads = min(max(1, self.threads), units)
        guard threads > 1 else { return body(0, units, 0) }
        let blasThreads = lm_blas_threads()
        lm_set_blas_threads(1)
        defer { lm_set_blas_threads(blasThreads) }
        let statuses = UnsafeMutableBufferPointer<Int32>.allocate(capacity: threads)
        defer { statuses.deallocate() }
        withoutActuallyEscaping(body) { body in
            // The units write disjoint memory (the kernel's contract), and each worker its own status.
            let shared = UncheckedSendable((body, statuses))
            DispatchQueue.concurrentPerform(iterations: threads) { i in
                shared.value.1[i] = shared.value.0(units * i / threads, units * (i + 1) / threads, i)
            }
        }
        return statuses.first { $0 != Int32(LM_OK) } ?? Int32(LM_OK)
    }

    // MARK: - Accounting

    /// Training FLOPs per token (ParameterLayout.flopsPerToken: 6·N + 6·L·T·D).
    public func flopsPerToken(seqLen: Int) -> Double { ParameterLayout.flopsPerToken(config, seqLen: seqLen) }
}

/// A value shared with concurrent work whose safety the caller establishes (disjoint writes).
private struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
