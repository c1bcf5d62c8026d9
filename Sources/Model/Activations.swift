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

    var residual: [Int] = []  // nLayers + 1 buffers (N,C): the input of each layer, then the last output
    var layers: [Layer] = []
    var normF = 0, rstdF = 0, logits = 0, losses = 0
    var ropeCos = 0, ropeSin = 0
    // Backward scratch.
    var dres = 0, dnorm = 0, dq = 0, dk = 0, dv = 0, dattnOut = 0, datt = 0, dgate = 0, dup = 0, dact = 0

    public init(config c: LlamaConfig, batch B: Int, seqLen T: Int) {
        batch = B
        seqLen = T
        let N = B * T, C = c.dim, F = c.ffnHiddenSize, Q = c.qDim, KV = c.kvDim, V = c.vocabSize
        var total = 0
        func carve(_ count: Int) -> Int {
            let offset = total
            total += (count + 15) / 16 * 16  // keep every buffer 64-byte aligned
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
        memory = FloatBuffer(count: total)
        tokens = .allocate(capacity: N)
        targets = .allocate(capacity: N)
        tokens.initialize(repeating: 0, count: N)
        targets.initialize(repeating: 0, count: N)
        lm_rope_tables(memory.pointer + ropeCos, memory.pointer + ropeSin, Int32(T), Int32(c.headDim), c.ropeTheta)
    }

    deinit {
        tokens.deallocate()
        targets.deallocate()
    }

    @inline(__always) func ptr(_ offset: Int) -> UnsafeMutablePointer<Float> { memory.pointer + offset }

    public var byteCount: Int { memory.byteCount }
}
