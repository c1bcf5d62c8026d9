// ActivationArena: every activation of one micro-batch, carved from one allocation planned from the config
// and the batch shape (B, T), as llm.c does. Nothing is allocated inside a training step.
//
// Per layer the forward keeps what its backward reads; the backward's scratch (d-buffers) is shared by all
// layers, since backward finishes one layer before starting the next.
import Kernels

public final class ActivationArena {
    public let batch: Int
    public let seqLen: Int
    let memory: FloatBuffer
    let tokens: UnsafeMutablePointer<Int32>
    let targets: UnsafeMutablePointer<Int32>

    /// Offsets into `memory` of one layer's saved activations. N = B·T rows.
    struct Layer {
        var norm1 = 0, rstd1 = 0, q = 0, k = 0, v = 0, att = 0, attnOut = 0, mid = 0, norm2 = 0, rstd2 = 0
        var gate = 0, up = 0, act = 0
    }

    /// Where every buffer lives in the arena, and the arena's size, for a config and batch shape.
    public struct Plan {
        var residual: [Int] = []  // nLayers + 1 buffers (N,C): the input of each layer, then the last output
        var layers: [Layer] = []
        var normF = 0, rstdF = 0, logits = 0, losses = 0
        var ropeCos = 0, ropeSin = 0
        // Backward scratch.
        var dres = 0, dnorm = 0, dq = 0, dk = 0, dv = 0, dattnOut = 0, datt = 0, dgate = 0, dup = 0, dact = 0
        /// Floats in the arena.
        public private(set) var count = 0

        public init(config c: LlamaConfig, batch B: Int, seqLen T: Int) {
            let N = B * T, C = c.dim, F = c.ffnHiddenSize, Q = c.qDim, KV = c.kvDim, V = c.outputSize
            func carve(_ n: Int) -> Int {
                let offset = count
                count += (n + 15) / 16 * 16  // keep every buffer 64-byte aligned
                return offset
            }
            residual = (0...c.nLayers).map { _ in carve(N * C) }
            for _ in 0..<c.nLayers {
                var l = Layer()
                l.norm1 = carve(N * C); l.rstd1 = carve(N)
                l.q = carve(N * Q); l.k = carve(N * KV); l.v = carve(N * KV)
                l.att = carve(B * c.nHeads * T * T); l.attnOut = carve(N * Q)
                l.mid = carve(N * C); l.norm2 = carve(N * C); l.rstd2 = carve(N)
                l.gate = carve(N * F); l.up = carve(N * F); l.act = carve(N * F)
                layers.append(l)
            }
            normF = carve(N * C); rstdF = carve(N); logits = carve(N * V); losses = carve(N)
            ropeCos = carve(T * c.headDim / 2); ropeSin = carve(T * c.headDim / 2)
            dres = carve(N * C); dnorm = carve(N * C)
            dq = carve(N * Q); dk = carve(N * KV); dv = carve(N * KV); dattnOut = carve(N * Q); datt = carve(T * T)
            dgate = carve(N * F); dup = carve(N * F); dact = carve(N * F)
        }

        /// Bytes of the arena plus the token and target buffers.
        public var byteCount: Int { count * MemoryLayout<Float>.stride }
    }

    let plan: Plan
    var residual: [Int] { plan.residual }
    var layers: [Layer] { plan.layers }
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
    var datt: Int { plan.datt }
    var dgate: Int { plan.dgate }
    var dup: Int { plan.dup }
    var dact: Int { plan.dact }

    public init(config c: LlamaConfig, batch B: Int, seqLen T: Int) {
        batch = B
        seqLen = T
        plan = Plan(config: c, batch: B, seqLen: T)
        let N = B * T
        memory = FloatBuffer(count: plan.count)
        tokens = .allocate(capacity: N)
        targets = .allocate(capacity: N)
        tokens.initialize(repeating: 0, count: N)
        targets.initialize(repeating: 0, count: N)
        lm_rope_tables(memory.pointer + plan.ropeCos, memory.pointer + plan.ropeSin, Int32(T), Int32(c.headDim), c.ropeTheta)
    }

    deinit {
        tokens.deallocate()
        targets.deallocate()
    }

    @inline(__always) func ptr(_ offset: Int) -> UnsafeMutablePointer<Float> { memory.pointer + offset }

    public var byteCount: Int { memory.byteCount }
}
