// Fast kernels against naive twins written from the definitions, in double.
import Foundation
import Kernels
import TestSupport
import Testing

@Suite struct NaiveTwinTests {
    @Test func matmulMatchesTripleLoop() {
        var r = Rand(11)
        let (N, C, OC) = (9, 13, 7)
        let inp = r.floats(N * C), weight = r.floats(OC * C), old = r.floats(N * OC)
        var out = old
        lm_matmul_forward(&out, inp, weight, Int32(N), Int32(C), Int32(OC), 1)
        var naive = [Float](repeating: 0, count: N * OC)
        for n in 0..<N {
            for o in 0..<OC {
                var s = Double(old[n * OC + o])
                for c in 0..<C { s += Double(inp[n * C + c]) * Double(weight[o * C + c]) }
                naive[n * OC + o] = Float(s)
            }
        }
        #expect(maxDifference(out, naive) < 1e-5)
    }

    @Test func attentionMatchesNaiveSoftmax() {
        var r = Rand(12)
        let (B, T, H, G, D) = (2, 7, 4, 2, 6)
        let q = r.floats(B * T * H * D, 2), k = r.floats(B * T * G * D, 2), v = r.floats(B * T * G * D)
        var out = [Float](repeating: 0, count: B * T * H * D), att = [Float](repeating: 0, count: B * H * T * T)
        lm_attention_naive_forward(&out, &att, q, k, v, Int32(B), Int32(T), Int32(H), Int32(G), Int32(D))
        var naive = [Float](repeating: 0, count: out.count)
        for b in 0..<B {
            for h in 0..<H {
                let g = h / (H / G)
                for t in 0..<T {
                    var scores = [Double](repeating: 0, count: t + 1)
                    for j in 0...t {
                        for d in 0..<D {
                            scores[j] +=
                                Double(q[((b * T + t) * H + h) * D + d]) * Double(k[((b * T + j) * G + g) * D + d])
                        }
                        scores[j] /= Double(D).squareRoot()
                    }
                    let m = scores.max()!
                    let e = scores.map { Foundation.exp($0 - m) }
                    let sum = e.reduce(0, +)
                    for d in 0..<D {
                        var s = 0.0
                        for j in 0...t { s += e[j] / sum * Double(v[((b * T + j) * G + g) * D + d]) }
                        naive[((b * T + t) * H + h) * D + d] = Float(s)
                    }
                }
            }
        }
        #expect(maxDifference(out, naive) < 1e-5)
        // Causality: no probability above the diagonal.
        for bh in 0..<(B * H) {
            for t in 0..<T {
                for j in (t + 1)..<T where att[bh * T * T + t * T + j] != 0 {
                    Issue.record("attention probability above the diagonal at row \(t), column \(j)")
                }
            }
        }
    }

    @Test func crossEntropyMatchesLogSumExp() {
        var r = Rand(13)
        let (N, V) = (4, 1000)
        let logits = r.floats(N * V, 20)
        let targets: [Int32] = [0, 999, -100, 500]
        var losses = [Float](repeating: 0, count: N)
        lm_cross_entropy_forward(&losses, logits, targets, Int32(N), Int32(V))
        for n in 0..<N {
            let row = logits[(n * V)..<((n + 1) * V)].map(Double.init)
            let m = row.max()!
            let lse = m + Foundation.log(row.map { Foundation.exp($0 - m) }.reduce(0, +))
            let expected = targets[n] < 0 ? 0 : lse - row[Int(targets[n])]
            #expect(abs(Double(losses[n]) - expected) < 1e-5 * max(1, abs(expected)), "row \(n)")
        }
    }

    /// The vectorised exp behind softmax, SiLU and cross-entropy, against libm over the range they use.
    @Test func fastExpIsAccurate() {
        // Through the SwiGLU forward: silu(g) · 1 = g · σ(g), probing exp(−g) on a wide range.
        let gate = stride(from: -80.0 as Float, through: 80, by: 0.037).map { $0 }
        let up = [Float](repeating: 1, count: gate.count)
        var out = [Float](repeating: 0, count: gate.count)
        lm_swiglu_forward(&out, gate, up, gate.count)
        for (g, y) in zip(gate, out) {
            let expected = Double(g) / (1 + Foundation.exp(-Double(g)))
            #expect(
                abs(Double(y) - expected) <= 4e-7 * abs(expected) + 1e-30, "silu(\(g)) = \(y), expected \(expected)")
        }
    }

    @Test func adamwMatchesPyTorchFormula() {
        var r = Rand(14)
        let n = 257
        let p0 = r.floats(n), g = r.floats(n), m0 = r.floats(n, 0.1), v0 = r.floats(n, 0.1).map { abs($0) }
        var p = p0, m = m0, v = v0
        let (lr, b1, b2, eps, wd): (Float, Float, Float, Float, Float) = (1e-3, 0.9, 0.95, 1e-5, 0.1)
        let step = 3.0
        let bc1 = 1 - Foundation.pow(Double(b1), step), bc2 = 1 - Foundation.pow(Double(b2), step)
        lm_adamw_update(&p, g, &m, &v, n, lr, b1, b2, eps, wd, Float(bc1), Float(bc2))
        for i in 0..<n {
            let mi = Double(b1) * Double(m0[i]) + (1 - Double(b1)) * Double(g[i])
            let vi = Double(b2) * Double(v0[i]) + (1 - Double(b2)) * Double(g[i]) * Double(g[i])
            var pi = Double(p0[i]) * (1 - Double(lr) * Double(wd))
            pi -= Double(lr) / bc1 * mi / (vi.squareRoot() / bc2.squareRoot() + Double(eps))
            #expect(
                abs(Double(p[i]) - pi) < 1e-6 && abs(Double(m[i]) - mi) < 1e-6 && abs(Double(v[i]) - vi) < 1e-6,
                "element \(i)")
        }
    }

    @Test func sumSquaresAndNonFinite() {
        var r = Rand(15)
        var x = r.floats(10_001)
        let expected = x.reduce(0.0) { $0 + Double($1) * Double($1) }
        #expect(abs(lm_sum_squares(x, x.count) - expected) < 1e-9 * expected * 1e3)
        #expect(lm_count_nonfinite(x, x.count) == 0)
        x[17] = .nan
        x[9000] = -.infinity
        #expect(lm_count_nonfinite(x, x.count) == 2)
    }
}
