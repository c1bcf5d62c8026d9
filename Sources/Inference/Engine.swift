// InferenceEngine: prefill and KV-cached decoding of many sequences at once, for generation and scoring.
//
// A sequence lives in one slot of the cache: per layer, its K and V rows after rotary, (max length, kv_heads ·
// head_dim) each, so grouped-query attention keeps only n_kv_heads. Prefill runs a prompt's rows through sgemm
// and, from position 0, flash attention over the cache rows it has just written; decode feeds one token per
// active slot through the batch-invariant matmul over packed weights (DecodeWeights, fp32 or bf16) and
// few-query attention over the cache. Only the rows whose logits are asked for go through the final norm and
// lm_head (a 512-token prompt at vocab 32000 would otherwise compute 16M logits to keep 32000).
//
// Batch invariance: every token's arithmetic depends on its own sequence only (prefill: one sequence per call,
// in chunks of a fixed size; decode: lm_matmul_panels and lm_attention_cached, whose every element has a fixed
// order), so a sample is the same bits whatever else is in the batch and however many ranks share the prompts.
// Sharded weights (PPO's generation_weights sharded, under train.sharding full): no rank holds the whole model,
// so every forward gathers it a unit at a time through the model's unitWeights provider, and decode packs each
// gathered layer into one layer's panels just before using it. The gathers are collectives, so the ranks run
// forwards in lockstep: each forward starts with an agreement that some rank still has work, and a rank that has
// none gathers along (finishLockstep) until every rank is done.
// What this is not: a sampler or a scheduler (Sampling.swift, BatchGenerator.swift), nor training.
import Dispatch
import Kernels
import Model
import Support

public enum InferenceError: Error, CustomStringConvertible, Equatable {
    case noLanguageHead
    case noScoreHead
    case tooLong(slot: Int, length: Int, maxLength: Int)
    case tokenOutOfRange(token: Int32, vocabSize: Int)
    case emptyPrompt
    case shardedWithoutGathers
    case peerFailed

    public var description: String {
        switch self {
        case .noLanguageHead:
            "the model has no lm_head to generate or score with (a reward model scores with `reward score`)"
        case .noScoreHead: "the model has no score head: it is a language model, not a reward model"
        case let .tooLong(slot, length, maxLength):
            "sequence in slot \(slot) would reach \(length) tokens; the engine holds \(maxLength) (the model's max_seq_len caps it)"
        case let .tokenOutOfRange(token, vocabSize): "token \(token) is outside the vocabulary [0, \(vocabSize))"
        case .emptyPrompt: "a prompt needs one token at least (the BOS token)"
        case .shardedWithoutGathers:
            "the model holds only this rank's share of its parameters: the engine needs its unit gathers and a lockstep agreement over the ranks"
        case .peerFailed: "another rank failed while the ranks sampled in lockstep (its own error says why)"
        }
    }
}

/// What a rank tells the others before each forward over sharded weights; the agreement is the largest over
/// the ranks, so one failure stops every rank at the same point.
public enum LockstepState: Int, Comparable, Sendable {
    case done = 0, working = 1, failed = 2

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

public final class InferenceEngine {
    public let model: LlamaModel
    /// Sequences the cache holds at once.
    public let slots: Int
    /// Tokens a slot holds: prompt and continuation.
    public let maxLength: Int
    /// Threads the row matmuls and the attention units spread over (sgemm threads inside OpenBLAS).
    public let threads: Int
    /// Rows of one prefill chunk (a longer prompt runs in several, the later ones attending over the cache).
    public let prefillChunk: Int
    /// Tokens each slot holds now.
    public private(set) var lengths: [Int]
    /// How decode holds its matrices (fp32 or bf16).
    public let decodePrecision: DecodePrecision
    /// The matrices decode reads, packed at the first decode (prefill and scoring read the model's own).
    public var decodeWeights: DecodeWeights {
        if let packed { return packed }
        let weights = DecodeWeights(model: model, precision: decodePrecision, threads: threads, streaming: sharded)
        packed = weights
        return weights
    }
    private var packed: DecodeWeights?
    /// The model holds only this rank's pieces: each forward gathers it a unit at a time, in lockstep.
    public let sharded: Bool
    /// Sharded: every rank's forwards agree through this (this rank's state in, the largest over the ranks out).
    private let lockstep: ((LockstepState) throws -> LockstepState)?

    /// (layers, slots, maxLength, kv_heads · head_dim) each.
    private let keys: CacheBuffer
    private let values: CacheBuffer
    /// How the cache holds K and V: fp32, or bf16 (half the memory and the bytes decode reads).
    public let cachePrecision: DecodePrecision
    private let work: Workspace
    private let cosTable: FloatBuffer
    private let sinTable: FloatBuffer
    private let attentionScratch: FloatBuffer
    private let attentionScratchStride: Int

    /// Values the cache holds: 2 · layers · kv_heads · head_dim · maxLength · slots.
    public static func cacheValues(_ c: LlamaConfig, slots: Int, maxLength: Int) -> Int {
        2 * c.nLayers * c.kvDim * maxLength * slots
    }

    /// Bytes of everything the engine allocates beside the model's parameters: the cache, the workspace of its
    /// largest batch (prefill chunk or decode batch), logits and scratch, and the packed decode weights (nil: an
    /// engine that only prefills, as scoring does).
    public static func bytes(
        _ c: LlamaConfig, slots: Int, maxLength: Int, threads: Int = 1, decodeWeights: DecodePrecision? = .fp32,
        cache: DecodePrecision = .fp32, sharded: Bool = false
    ) -> Int {
        let rows = max(slots, min(maxLength, defaultPrefillChunk))
        let scratch = max(1, threads) * c.nHeads * maxLength
        return cache.bytesPerValue * cacheValues(c, slots: slots, maxLength: maxLength)
            + 4 * (Workspace.floats(c, rows: rows) + scratch + maxLength * c.headDim)
            + (decodeWeights.map { DecodeWeights.bytes(c, precision: $0, streaming: sharded) } ?? 0)
    }

    static let defaultPrefillChunk = 512

    public init(
        model: LlamaModel, slots: Int, maxLength: Int? = nil, threads: Int = 1, prefillChunk: Int? = nil,
        decodeWeights precision: DecodePrecision = .fp32, cache: DecodePrecision = .fp32,
        lockstep: ((LockstepState) throws -> LockstepState)? = nil
    ) throws {
        let c = model.config
        guard c.heads.contains(.lm) || c.heads.contains(.score) else { throw InferenceError.noLanguageHead }
        sharded = !model.parameterPieces.isWhole(of: model.layout.count)
        guard !sharded || (model.unitWeights != nil && lockstep != nil) else {
            throw InferenceError.shardedWithoutGathers
        }
        self.lockstep = sharded ? lockstep : nil
        self.model = model
        self.slots = max(1, slots)
        self.maxLength = min(maxLength ?? c.maxSeqLen, c.maxSeqLen)
        self.threads = max(1, threads)
        self.prefillChunk = max(1, min(self.maxLength, prefillChunk ?? Self.defaultPrefillChunk))
        lengths = [Int](repeating: 0, count: self.slots)
        let cacheFloats = Self.cacheValues(c, slots: self.slots, maxLength: self.maxLength) / 2
        cachePrecision = cache
        keys = CacheBuffer(count: cacheFloats, precision: cache)
        values = CacheBuffer(count: cacheFloats, precision: cache)
        work = Workspace(c, rows: max(self.slots, self.prefillChunk))
        let half = c.headDim / 2
        cosTable = FloatBuffer(count: self.maxLength * half)
        sinTable = FloatBuffer(count: self.maxLength * half)
        lm_rope_tables(cosTable.pointer, sinTable.pointer, Int32(self.maxLength), Int32(c.headDim), c.ropeTheta)
        attentionScratchStride = lm_attention_cached_scratch_floats(
            Int32(c.nHeads), Int32(c.nKVHeads), Int32(self.maxLength))
        attentionScratch = FloatBuffer(count: attentionScratchStride * self.threads)
        decodePrecision = precision
    }

    /// Follows the model's parameters after they changed (a training step between generations); sharded,
    /// every forward packs what it gathers.
    public func repackWeights() {
        // Not packed yet: the first decode packs the parameters as they are then.
        if !sharded { packed?.repack(threads: threads) }
    }

    /// Sharded: gathers along with the other ranks' forwards until none has work left. Every rank calls it once
    /// its own calls are done (BatchGenerator.run does); without sharding it does nothing.
    public func finishLockstep() throws {
        guard let lockstep else { return }
        while true {
            switch try lockstep(.done) {
            case .done: return
            case .failed: throw InferenceError.peerFailed
            case .working: break
            }
            model.forEachUnitForward { _, _ in }
        }
    }

    /// Sharded: this rank failed between forwards; the others learn it at their next agreement and throw
    /// `peerFailed` there, rather than wait for it forever.
    public func abandonLockstep() { _ = try? lockstep?(.failed) }

    /// Forgets slot's sequence.
    public func release(slot: Int) { lengths[slot] = 0 }

    /// Appends `tokens` to slot's sequence (empty or not) and returns the logits (rows, V) at the positions
    /// `logitsFrom..<tokens.count` of the tokens given (default: the last only). `body` reads them before the
    /// next call overwrites them; a long prompt arrives in chunks, each chunk's rows once.
    public func prefill(
        slot: Int, tokens: [Int32], logitsFrom: Int? = nil,
        _ body: (_ firstRow: Int, _ logits: UnsafeBufferPointer<Float>) throws -> Void
    ) throws {
        guard !tokens.isEmpty else { throw InferenceError.emptyPrompt }
        try check(tokens)
        let start = lengths[slot]
        guard start + tokens.count <= maxLength else {
            throw InferenceError.tooLong(slot: slot, length: start + tokens.count, maxLength: maxLength)
        }
        let wanted = max(0, min(logitsFrom ?? tokens.count - 1, tokens.count - 1))
        var done = 0
        while done < tokens.count {
            let n = min(prefillChunk, tokens.count - done)
            let rows = Array(tokens[done..<(done + n)])
            let positions = (0..<n).map { Int32(start + done + $0) }
            let first = max(wanted, done) - done
            let logitRows = first < n ? Array(first..<n) : []
            try forward(
                tokens: rows, slots: [Int](repeating: slot, count: n), positions: positions,
                prefillFromZero: start + done == 0, logitRows: logitRows)
            lengths[slot] = start + done + n
            if !logitRows.isEmpty {
                try body(
                    done + first,
                    UnsafeBufferPointer(start: work.logits, count: logitRows.count * model.config.vocabSize))
            }
            done += n
        }
    }

    /// One new token for each (slot, token): the logits (count, V) of the next position, row i for entry i.
    public func decode(_ entries: [(slot: Int, token: Int32)]) throws -> UnsafeBufferPointer<Float> {
        precondition(
            Set(entries.map(\.slot)).count == entries.count, "a decode batch holds at most one token per slot")
        try check(entries.map(\.token))
        for (slot, _) in entries where lengths[slot] + 1 > maxLength {
            throw InferenceError.tooLong(slot: slot, length: lengths[slot] + 1, maxLength: maxLength)
        }
        try forward(
            tokens: entries.map(\.token), slots: entries.map(\.slot),
            positions: entries.map { Int32(lengths[$0.slot]) },
            prefillFromZero: false, logitRows: Array(entries.indices), decoding: true)
        for (slot, _) in entries { lengths[slot] += 1 }
        return UnsafeBufferPointer(start: work.logits, count: entries.count * model.config.vocabSize)
    }

    /// A reward model's score of `tokens`, read at the last token (as RewardObjective reads it in training).
    /// `slot` is used and left empty.
    public func reward(_ tokens: [Int32], slot: Int = 0) throws -> Float {
        guard model.config.heads.contains(.score) else { throw InferenceError.noScoreHead }
        guard !tokens.isEmpty else { throw InferenceError.emptyPrompt }
        try check(tokens)
        release(slot: slot)
        defer { release(slot: slot) }
        guard tokens.count <= maxLength else {
            throw InferenceError.tooLong(slot: slot, length: tokens.count, maxLength: maxLength)
        }
        var done = 0, value: Float = 0
        while done < tokens.count {
            let n = min(prefillChunk, tokens.count - done)
            let last = done + n == tokens.count
            try forward(
                tokens: Array(tokens[done..<(done + n)]), slots: [Int](repeating: slot, count: n),
                positions: (0..<n).map { Int32(done + $0) }, prefillFromZero: done == 0,
                logitRows: last ? [n - 1] : [], head: .score)
            lengths[slot] = done + n
            if last { value = work.logits[0] }
            done += n
        }
        return value
    }

    private func hasHead(_ head: OutputHead) -> Bool { model.config.heads.contains(head) }

    private func check(_ tokens: [Int32]) throws {
        let v = model.config.vocabSize
        if let bad = tokens.first(where: { $0 < 0 || Int($0) >= v }) {
            throw InferenceError.tokenOutOfRange(token: bad, vocabSize: v)
        }
    }

    // MARK: - The forward over rows

    /// Rows of (slot, position, token) through every block, their K/V into the cache, and logits for
    /// `logitRows` into work.logits. `decoding`: the batch-invariant row kernels; otherwise sgemm (prefill).
    private func forward(
        tokens: [Int32], slots rowSlots: [Int], positions: [Int32], prefillFromZero: Bool, logitRows: [Int],
        decoding: Bool = false, head: OutputHead = .lm
    ) throws {
        guard logitRows.isEmpty || hasHead(head) else {
            throw head == .lm ? InferenceError.noLanguageHead : InferenceError.noScoreHead
        }
        if let lockstep, try lockstep(.working) == .failed { throw InferenceError.peerFailed }
        let c = model.config, layout = model.layout, unitWeights = model.unitWeights
        let n = tokens.count, C = c.dim, Q = c.qDim, KV = c.kvDim, F = c.ffnHiddenSize
        let (H, G, D) = (Int32(c.nHeads), Int32(c.nKVHeads), Int32(c.headDim))
        let eps = Float(c.normEps), w = work
        // Each unit's base (gathered, when sharded) in order: the embedding, the blocks, the head.
        let pe = model.parameterBase(forwardOf: 0)
        tokens.withUnsafeBufferPointer {
            lm_embedding_forward(w.x, $0.baseAddress!, pe + layout.embedding.offset, Int32(n), Int32(C))
        }
        unitWeights?.forwardFinished(unit: 0)
        let layerStride = slots * maxLength * KV
        let offsets = rowSlots.indices.map { Int(rowSlots[$0] * maxLength * KV) }
        for l in 0..<c.nLayers {
            let unit = ParameterLayout.unit(ofLayer: l), p = model.parameterBase(forwardOf: unit)
            defer { unitWeights?.forwardFinished(unit: unit) }
            if decoding && sharded { decodeWeights.pack(layer: l, base: p, threads: threads) }
            func t(_ tensor: LayerTensor) -> UnsafeMutablePointer<Float> { p + layout.layer(l, tensor).offset }
            lm_rmsnorm_forward(w.norm, w.rstd, w.x, t(.attentionNorm), Int32(n), Int32(C), eps)
            matmul(w.q, w.norm, p, l, .q, n, C, Q, accumulate: false, decoding)
            matmul(w.k, w.norm, p, l, .k, n, C, KV, accumulate: false, decoding)
            matmul(w.v, w.norm, p, l, .v, n, C, KV, accumulate: false, decoding)
            positions.withUnsafeBufferPointer { pos in
                lm_rope_forward_at(w.q, cosTable.pointer, sinTable.pointer, pos.baseAddress!, Int32(n), H, D)
                lm_rope_forward_at(w.k, cosTable.pointer, sinTable.pointer, pos.baseAddress!, Int32(n), G, D)
            }
            let layerStart = l * layerStride
            for r in 0..<n {
                let at = layerStart + offsets[r] + Int(positions[r]) * KV
                keys.store(w.k + r * KV, count: KV, at: at)
                values.store(w.v + r * KV, count: KV, at: at)
            }
            if prefillFromZero {
                // The rows are positions 0..<n of one slot, the very rows just cached (rounded as the cache holds
                // them, so that prefill and decode read the same keys): causal flash attention over them.
                let (bq, bk) = (Int32(LlamaModel.attentionTiles.query), Int32(LlamaModel.attentionTiles.key))
                if cachePrecision == .bf16 {
                    keys.load(w.k, count: n * KV, at: layerStart + offsets[0])
                    values.load(w.v, count: n * KV, at: layerStart + offsets[0])
                }
                let (k, v) = (w.k, w.v)
                // On this thread: its tiles call sgemm, and spreading them over ours would mean holding OpenBLAS
                // at one thread, a process-wide switch unsafe beside other BLAS callers (prefill's time is in the
                // matmuls, which OpenBLAS threads itself).
                lm_flash_attention_forward(
                    w.attention, w.lse, w.q, k, v, 1, Int32(n), H, G, D, bq, bk, 0,
                    lm_flash_attention_forward_units(1, Int32(n), H, bq))
            } else {
                let scratch = attentionScratch.pointer, stride = attentionScratchStride
                offsets.withUnsafeBufferPointer { off in
                    positions.withUnsafeBufferPointer { pos in
                        let (o, q, keys, values) = (w.attention, w.q, keys, values)
                        let (offsetsBase, positionsBase) = (off.baseAddress!, pos.baseAddress!)
                        parallel(units: n * Int(G)) { first, end, worker in
                            let s = scratch + worker * stride
                            switch keys.precision {
                            case .fp32:
                                lm_attention_cached(
                                    o, q, keys.floats + layerStart, values.floats + layerStart, offsetsBase,
                                    positionsBase, H, G, D, s, first, end)
                            case .bf16:
                                lm_attention_cached_bf16(
                                    o, q, keys.halves + layerStart, values.halves + layerStart, offsetsBase,
                                    positionsBase, H, G, D, s, first, end)
                            }
                        }
                    }
                }
            }
            matmul(w.x, w.attention, p, l, .o, n, Q, C, accumulate: true, decoding)
            lm_rmsnorm_forward(w.norm, w.rstd, w.x, t(.ffnNorm), Int32(n), Int32(C), eps)
            matmul(w.gate, w.norm, p, l, .gate, n, C, F, accumulate: false, decoding)
            matmul(w.up, w.norm, p, l, .up, n, C, F, accumulate: false, decoding)
            lm_swiglu_forward(w.gate, w.gate, w.up, n * F)
            matmul(w.x, w.gate, p, l, .down, n, F, C, accumulate: true, decoding)
        }
        // The head's unit is gathered even when no logits are asked for: every forward gathers every unit.
        let headUnit = c.nLayers + 1, p = model.parameterBase(forwardOf: headUnit)
        defer { unitWeights?.forwardFinished(unit: headUnit) }
        guard !logitRows.isEmpty else { return }
        // Only the rows asked for: gathered, normed, through lm_head.
        let k = logitRows.count
        for (i, r) in logitRows.enumerated() { (w.norm + i * C).update(from: w.x + r * C, count: C) }
        lm_rmsnorm_forward(w.product, w.rstd, w.norm, p + layout.finalNorm.offset, Int32(k), Int32(C), eps)
        if head == .score {
            // score.weight (1, dim): one value per row, prefill only.
            return lm_matmul_forward(w.logits, w.product, p + layout.head(.score)!.offset, Int32(k), Int32(C), 1, 0)
        }
        if decoding && sharded { decodeWeights.packHead(base: p, threads: threads) }
        matmul(w.logits, w.product, p, nil, nil, k, C, c.vocabSize, accumulate: false, decoding)
    }

    /// out (n, oc) (+)= inp (n, c) · weight (oc, c)ᵀ, the weight layer l's `tensor` (nil: lm_head): sgemm on
    /// the unit's parameters at `base` for prefill; for decode, the packed weights' panels over `threads` (whole
    /// panels to each, so the split never changes a channel's arithmetic).
    private func matmul(
        _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ base: UnsafeMutablePointer<Float>,
        _ layer: Int?, _ tensor: LayerTensor?, _ n: Int, _ c: Int, _ oc: Int, accumulate: Bool, _ decoding: Bool
    ) {
        guard decoding else {
            let layout = model.layout
            let spec = layer.map { layout.layer($0, tensor!) } ?? layout.head(.lm)!
            return lm_matmul_forward(
                out, inp, base + spec.offset, Int32(n), Int32(c), Int32(oc), accumulate ? 1 : 0)
        }
        let weights = decodeWeights
        parallel(units: (oc + 63) / 64) { first, end, _ in
            weights.matmul(
                out, inp, layer: layer, tensor, rows: n, inputs: c, outputs: oc, panels: first, end,
                accumulate: accumulate)
        }
    }

    /// `body` over [0, units) in one contiguous range per thread (the decode kernels, which call no BLAS).
    private func parallel(units: Int, _ body: (Int, Int, Int) -> Void) {
        let workers = min(threads, units)
        guard workers > 1 else { return body(0, units, 0) }
        withoutActuallyEscaping(body) { body in
            let shared = UnsafeSendable(body)
            DispatchQueue.concurrentPerform(iterations: workers) { i in
                shared.value(units * i / workers, units * (i + 1) / workers, i)
            }
        }
    }
}

/// One of the cache's two tensors (layers, slots, maxLength, kv_dim), in fp32 or bf16.
private final class CacheBuffer {
    let precision: DecodePrecision
    private let memory: UnsafeMutableRawPointer

    init(count: Int, precision: DecodePrecision) {
        self.precision = precision
        let bytes = max(count, 1) * precision.bytesPerValue
        memory = .allocate(byteCount: bytes, alignment: 64)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
    }

    deinit { memory.deallocate() }

    var floats: UnsafeMutablePointer<Float> { memory.assumingMemoryBound(to: Float.self) }
    var halves: UnsafeMutablePointer<UInt16> { memory.assumingMemoryBound(to: UInt16.self) }

    /// Values [at, at + count) from `source` (rounded to bf16 in a bf16 cache).
    func store(_ source: UnsafePointer<Float>, count: Int, at: Int) {
        switch precision {
        case .fp32: (floats + at).update(from: source, count: count)
        case .bf16: lm_to_bf16(halves + at, source, count)
        }
    }

    /// Values [at, at + count) into `target`, as fp32.
    func load(_ target: UnsafeMutablePointer<Float>, count: Int, at: Int) {
        switch precision {
        case .fp32: target.update(from: floats + at, count: count)
        case .bf16: lm_from_bf16(target, halves + at, count)
        }
    }
}

/// The engine's activations for up to `rows` rows, in one buffer.
private final class Workspace {
    let memory: FloatBuffer
    let x, norm, rstd, q, k, v, attention, lse, gate, up, product, logits: UnsafeMutablePointer<Float>

    static func sizes(_ c: LlamaConfig, rows n: Int) -> [Int] {
        [
            n * c.dim, n * c.dim, n, n * c.qDim, n * c.kvDim, n * c.kvDim, n * c.qDim, n * c.nHeads,
            n * c.ffnHiddenSize, n * c.ffnHiddenSize, n * max(c.dim, c.ffnHiddenSize), n * c.vocabSize,
        ]
    }

    static func floats(_ c: LlamaConfig, rows: Int) -> Int { sizes(c, rows: rows).reduce(0, +) }

    init(_ c: LlamaConfig, rows: Int) {
        let sizes = Self.sizes(c, rows: rows)
        memory = FloatBuffer(count: sizes.reduce(0, +))
        let base = memory.pointer
        var offset = 0
        var pointers: [UnsafeMutablePointer<Float>] = []
        for size in sizes {
            pointers.append(base + offset)
            offset += size
        }
        (x, norm, rstd, q, k, v) = (pointers[0], pointers[1], pointers[2], pointers[3], pointers[4], pointers[5])
        (attention, lse, gate, up, product, logits) = (
            pointers[6], pointers[7], pointers[8], pointers[9], pointers[10], pointers[11]
        )
    }
}

private struct UnsafeSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

extension InferenceEngine {
    /// log_softmax(logits / temperature) at each token of `completion` read after `prompt`, in double.
    public func logprobs(
        prompt: [Int32], completion: [Int32], temperature: Double = 1, slot: Int = 0
    ) throws -> [Double] {
        try logprobs(
            tokens: prompt + completion,
            scored: [Bool](repeating: false, count: prompt.count) + [Bool](repeating: true, count: completion.count),
            temperature: temperature, slot: slot)
    }

    /// log_softmax(logits / temperature) at tokens[i] given tokens[..<i], for every i where scored[i] (the log-probs
    /// DPO, PPO and multiple-choice evaluation sum), in double; the first token has no prediction and cannot be
    /// scored. `slot` is used and left empty.
    public func logprobs(tokens: [Int32], scored: [Bool], temperature: Double = 1, slot: Int = 0) throws -> [Double] {
        precondition(tokens.count == scored.count, "one scored flag per token")
        guard let first = scored.firstIndex(of: true) else { return [] }
        guard first > 0 else { throw InferenceError.emptyPrompt }
        try check(tokens)
        release(slot: slot)
        defer { release(slot: slot) }
        let V = model.config.vocabSize
        var out: [Double] = []
        // Position p predicts tokens[p + 1]; the last token predicts nothing, so it is not fed.
        try prefill(slot: slot, tokens: Array(tokens.dropLast()), logitsFrom: first - 1) { firstRow, logits in
            for row in 0..<(logits.count / V) where scored[firstRow + row + 1] {
                out.append(
                    Sampler.logSoftmax(
                        UnsafeBufferPointer(rebasing: logits[(row * V)..<((row + 1) * V)]),
                        at: Int(tokens[firstRow + row + 1]), temperature: temperature))
            }
        }
        return out
    }
}
