// ActivationArena: every activation of one micro-batch, carved from one allocation planned from the config,
// the batch shape (B, T) and what the model is for, as llm.c does. Nothing is allocated inside a step.
//
// What a block keeps for its backward (its "block buffers"): the two RMSNorm outputs and their 1/rms, q, k, v,
// the attention output and one logsumexp per query row (flash attention keeps no T×T probabilities), the
// residual after attention, and the SwiGLU gate, up and product.
//  - training, recompute none: every layer has its own block buffers.
//  - training, recompute layer: one set of block buffers serves all layers; the forward keeps only each
//    block's input (the residual stream), and the backward recomputes a block into the set just before
//    running that block's backward (the same kernels in the same order: bitwise the same gradients).
//  - inference: one set of block buffers and no backward scratch.
// The backward's scratch (d-buffers) is shared by all layers, since backward finishes one layer before the next.
import Kernels

/// What a model's memory is for: training (with or without activation recomputation) or inference.
public enum ModelPurpose: Equatable, Sendable {
    case training(Recompute)
    case inference

    public var trains: Bool { self != .inference }
}

/// Activation recomputation (`train.recompute`): keep every block's activations, or only each block's input.
public enum Recompute: String, Codable, CaseIterable, Sendable {
    case none, layer
}

public final class ActivationArena {
    public let batch: Int
    public let seqLen: Int
    public let purpose: ModelPurpose
    let memory: FloatBuffer
    let tokens: UnsafeMutablePointer<Int32>
    let targets: UnsafeMutablePointer<Int32>

    /// Offsets into `memory` of one block's buffers. N = B·T rows.
    struct Block {
        var norm1 = 0, rstd1 = 0, q = 0, k = 0, v = 0, lse = 0, attnOut = 0, mid = 0, norm2 = 0, rstd2 = 0
        var gate = 0, up = 0, act = 0
    }

    /// Where every buffer lives in the arena, and the arena's size, for a config, batch shape and purpose.
    public struct Plan {
        var residual: [Int] = []  // nLayers + 1 buffers (N,C): the input of each block, then the last output
        var blocks: [Block] = []  // one per layer, or one shared (recompute layer, inference)
        var normF = 0, rstdF = 0, logits = 0, losses = 0  // logits: every head's outputs, head by head
        var ropeCos = 0, ropeSin = 0
        // Backward scratch (training only).
        var dres = 0, dnorm = 0, dq = 0, dk = 0, dv = 0, dattnOut = 0, dgate = 0, dup = 0, dact = 0
        /// Floats in the arena.
        public private(set) var count = 0
        /// Int32 tokens and targets beside the arena.
        public let tokenCount: Int

        public init(config c: LlamaConfig, batch B: Int, seqLen T: Int, purpose: ModelPurpose) {
            let N = B * T, C = c.dim, F = c.ffnHiddenSize, Q = c.qDim, KV = c.kvDim, V = c.headRows
            tokenCount = N
            func carve(_ n: Int) -> Int {
                let offset = count
                count += (n + 15) / 16 * 16  // keep every buffer 64-byte aligned
                return offset
            }
            residual = (0...c.nLayers).map { _ in carve(N * C) }
            let separate = purpose == .training(.none) ? c.nLayers : 1
            for _ in 0..<separate {
                var s = Block()
                s.norm1 = carve(N * C)
                s.rstd1 = carve(N)
                s.q = carve(N * Q)
                s.k = carve(N * KV)
                s.v = carve(N * KV)
                s.lse = carve(B * c.nHeads * T)
                s.attnOut = carve(N * Q)
                s.mid = carve(N * C)
                s.norm2 = carve(N * C)
                s.rstd2 = carve(N)
                s.gate = carve(N * F)
                s.up = carve(N * F)
                s.act = carve(N * F)
                blocks.append(s)
            }
            normF = carve(N * C)
            rstdF = carve(N)
            logits = carve(N * V)
            losses = carve(N)
            ropeCos = carve(T * c.headDim / 2)
            ropeSin = carve(T * c.headDim / 2)
            if purpose.trains {
                dres = carve(N * C)
                dnorm = carve(N * C)
                dq = carve(N * Q)
                dk = carve(N * KV)
                dv = carve(N * KV)
                dattnOut = carve(N * Q)
                dgate = carve(N * F)
                dup = carve(N * F)
                dact = carve(N * F)
            }
        }

        /// Bytes of the arena plus the token and target buffers: what the model allocates for activations.
        public var byteCount: Int { count * MemoryLayout<Float>.stride + 2 * tokenCount * MemoryLayout<Int32>.stride }
    }

    let plan: Plan
    var residual: [Int] { plan.residual }
    /// Layer l's block buffers (the shared set when recomputing or inferring).
    func block(_ l: Int) -> Block { plan.blocks.count == 1 ? plan.blocks[0] : plan.blocks[l] }
    var normF: Int { plan.normF }
    var rstdF: Int { plan.rstdF }
    var logits: Int { plan.logits }
    var losses: Int { plan.losses }
    var ropeCos: Int { plan.ropeCos }
    var ropeSin: Int { plan.ropeSin }
    var dres: Int { plan.dres }
    var dnorm: Int { plan.dnorm }
    var dq: Int { plan.dq }
    var dk: Int { plan.dk }
    var dv: Int { plan.dv }
    var dattnOut: Int { plan.dattnOut }
    var dgate: Int { plan.dgate }
    var dup: Int { plan.dup }
    var dact: Int { plan.dact }

    public init(config c: LlamaConfig, batch B: Int, seqLen T: Int, purpose: ModelPurpose) {
        batch = B
        seqLen = T
        self.purpose = purpose
        plan = Plan(config: c, batch: B, seqLen: T, purpose: purpose)
        let N = B * T
        memory = FloatBuffer(count: plan.count)
        tokens = .allocate(capacity: N)
        targets = .allocate(capacity: N)
        tokens.initialize(repeating: 0, count: N)
        targets.initialize(repeating: 0, count: N)
        lm_rope_tables(
            memory.pointer + plan.ropeCos, memory.pointer + plan.ropeSin, Int32(T), Int32(c.headDim), c.ropeTheta)
    }

    deinit {
        tokens.deallocate()
        targets.deallocate()
    }

    @inline(__always) func ptr(_ offset: Int) -> UnsafeMutablePointer<Float> { memory.pointer + offset }

    public var byteCount: Int { plan.byteCount }
}
