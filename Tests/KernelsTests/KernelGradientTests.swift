// Every kernel's backward against finite differences of its forward, on small random shapes.
import Kernels
import TestSupport
import Testing

@Suite struct KernelGradientTests {
    @Test func matmulBackward() {
        var r = Rand(1)
        let (N, C, OC) = (5, 7, 6)
        let inp = r.floats(N * C), weight = r.floats(OC * C), w = r.floats(N * OC)
        func forward(_ inp: [Float], _ weight: [Float]) -> [Float] {
            var out = [Float](repeating: 0, count: N * OC)
            lm_matmul_forward(&out, inp, weight, Int32(N), Int32(C), Int32(OC), 0)
            return out
        }
        var dinp = [Float](repeating: 0, count: N * C), dweight = [Float](repeating: 0, count: OC * C)
        lm_matmul_backward(&dinp, &dweight, w, inp, weight, Int32(N), Int32(C), Int32(OC))
        expectGradient("matmul dinp", at: inp, analytic: dinp) { weightedSum(forward($0, weight), w) }
        expectGradient("matmul dweight", at: weight, analytic: dweight) { weightedSum(forward(inp, $0), w) }
    }

    @Test func embeddingBackward() {
        var r = Rand(2)
        let (N, C, V) = (6, 4, 5)
        let tokens: [Int32] = [0, 3, 3, 1, 4, 3]  // repeats must accumulate
        let table = r.floats(V * C), w = r.floats(N * C)
        func forward(_ table: [Float]) -> [Float] {
            var out = [Float](repeating: 0, count: N * C)
            lm_embedding_forward(&out, tokens, table, Int32(N), Int32(C))
            return out
        }
        var dtable = [Float](repeating: 0, count: V * C)
        lm_embedding_backward(&dtable, w, tokens, Int32(N), Int32(C))
        expectGradient("embedding dtable", at: table, analytic: dtable) { weightedSum(forward($0), w) }
    }

    @Test func rmsnormBackward() {
        var r = Rand(3)
        let (N, C) = (4, 16)
        let inp = r.floats(N * C, 2), weight = r.floats(C), w = r.floats(N * C)
        func forward(_ inp: [Float], _ weight: [Float]) -> [Float] {
            var out = [Float](repeating: 0, count: N * C), rstd = [Float](repeating: 0, count: N)
            lm_rmsnorm_forward(&out, &rstd, inp, weight, Int32(N), Int32(C), 1e-5)
            return out
        }
        var out = [Float](repeating: 0, count: N * C), rstd = [Float](repeating: 0, count: N)
        lm_rmsnorm_forward(&out, &rstd, inp, weight, Int32(N), Int32(C), 1e-5)
        var dinp = [Float](repeating: 0, count: N * C), dweight = [Float](repeating: 0, count: C)
        lm_rmsnorm_backward(&dinp, &dweight, w, inp, weight, rstd, Int32(N), Int32(C))
        expectGradient("rmsnorm dinp", at: inp, analytic: dinp) { weightedSum(forward($0, weight), w) }
        expectGradient("rmsnorm dweight", at: weight, analytic: dweight) { weightedSum(forward(inp, $0), w) }
    }

    @Test func ropeBackward() {
        var r = Rand(4)
        let (B, T, H, D) = (2, 5, 3, 8)
        var cosT = [Float](repeating: 0, count: T * D / 2), sinT = cosT
        lm_rope_tables(&cosT, &sinT, Int32(T), Int32(D), 10000)
        let x = r.floats(B * T * H * D), w = r.floats(B * T * H * D)
        func forward(_ x: [Float]) -> [Float] {
            var y = x
            lm_rope_forward(&y, cosT, sinT, Int32(B), Int32(T), Int32(H), Int32(D))
            return y
        }
        var dx = w
        lm_rope_backward(&dx, cosT, sinT, Int32(B), Int32(T), Int32(H), Int32(D))
        expectGradient("rope dx", at: x, analytic: dx) { weightedSum(forward($0), w) }
    }

    @Test(arguments: [(4, 4), (4, 2), (4, 1)])
    func attentionBackward(heads H: Int, kvHeads G: Int) {
        var r = Rand(5)
        let (B, T, D) = (2, 6, 4)
        let q = r.floats(B * T * H * D), k = r.floats(B * T * G * D), v = r.floats(B * T * G * D)
        let w = r.floats(B * T * H * D)
        func forward(_ q: [Float], _ k: [Float], _ v: [Float]) -> ([Float], [Float]) {
            var out = [Float](repeating: 0, count: B * T * H * D), att = [Float](repeating: 0, count: B * H * T * T)
            lm_attention_naive_forward(&out, &att, q, k, v, Int32(B), Int32(T), Int32(H), Int32(G), Int32(D))
            return (out, att)
        }
        let att = forward(q, k, v).1
        var dq = [Float](repeating: 0, count: q.count), dk = [Float](repeating: 0, count: k.count)
        var dv = [Float](repeating: 0, count: v.count), scratch = [Float](repeating: 0, count: T * T)
        lm_attention_naive_backward(
            &dq, &dk, &dv, &scratch, w, att, q, k, v, Int32(B), Int32(T), Int32(H), Int32(G), Int32(D))
        expectGradient("attention dq (H \(H), G \(G))", at: q, analytic: dq) { weightedSum(forward($0, k, v).0, w) }
        expectGradient("attention dk (H \(H), G \(G))", at: k, analytic: dk) { weightedSum(forward(q, $0, v).0, w) }
        expectGradient("attention dv (H \(H), G \(G))", at: v, analytic: dv) { weightedSum(forward(q, k, $0).0, w) }
    }

    @Test func swigluBackward() {
        var r = Rand(6)
        let n = 40
        let gate = r.floats(n, 4), up = r.floats(n, 2), w = r.floats(n)
        func forward(_ gate: [Float], _ up: [Float]) -> [Float] {
            var out = [Float](repeating: 0, count: n)
            lm_swiglu_forward(&out, gate, up, n)
            return out
        }
        var dgate = [Float](repeating: 0, count: n), dup = [Float](repeating: 0, count: n)
        lm_swiglu_backward(&dgate, &dup, w, gate, up, n)
        expectGradient("swiglu dgate", at: gate, analytic: dgate) { weightedSum(forward($0, up), w) }
        expectGradient("swiglu dup", at: up, analytic: dup) { weightedSum(forward(gate, $0), w) }
    }

    @Test func crossEntropyBackward() {
        var r = Rand(7)
        let (N, V) = (5, 11)
        let logits = r.floats(N * V, 3)
        let targets: [Int32] = [3, -100, 0, 10, 3]
        let dloss: Float = 0.25
        func loss(_ logits: [Float]) -> Double {
            var losses = [Float](repeating: 0, count: N)
            lm_cross_entropy_forward(&losses, logits, targets, Int32(N), Int32(V))
            return losses.reduce(0.0) { $0 + Double($1) } * Double(dloss)
        }
        var dlogits = [Float](repeating: 7, count: N * V)
        lm_cross_entropy_backward(&dlogits, logits, targets, dloss, Int32(N), Int32(V))
        expectGradient("cross-entropy dlogits", at: logits, analytic: dlogits, loss: loss)
        #expect(dlogits[V..<(2 * V)].allSatisfy { $0 == 0 }, "an ignored row must get exactly zero gradient")
    }
}
