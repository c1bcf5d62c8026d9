// Decoding's kernels against twins written from the definitions, in double, and against themselves: the row
// matmul gives every element the same bits whatever the number of rows beside it and however its channels are
// split over calls (what makes a sample independent of its batch); cached attention equals the naive causal
// softmax at each query's own position.
import Foundation
import Kernels
import TestSupport
import Testing

@Suite struct DecodeKernelTests {
    @Test func rowMatmulIsTheProductAndBatchInvariant() {
        var r = Rand(21)
        let (N, C, OC) = (7, 37, 23)  // C not a multiple of 8, OC not of 4
        let inp = r.floats(N * C), weight = r.floats(OC * C)
        var out = [Float](repeating: 0, count: N * OC)
        lm_matmul_rows(&out, inp, weight, Int32(N), Int32(C), Int32(OC), 0, Int32(OC))
        var naive = [Float](repeating: 0, count: N * OC)
        for n in 0..<N {
            for o in 0..<OC {
                var s = 0.0
                for c in 0..<C { s += Double(inp[n * C + c]) * Double(weight[o * C + c]) }
                naive[n * OC + o] = Float(s)
            }
        }
        #expect(maxDifference(out, naive) < 1e-5)
        // Each row alone, and the channels in uneven ranges: the same bits.
        for n in 0..<N {
            var alone = [Float](repeating: 0, count: OC)
            let row = Array(inp[(n * C)..<((n + 1) * C)])
            for (first, end) in [(0, 5), (5, 6), (6, 17), (17, OC)] {
                lm_matmul_rows(&alone, row, weight, 1, Int32(C), Int32(OC), Int32(first), Int32(end))
            }
            #expect(alone == Array(out[(n * OC)..<((n + 1) * OC)]), "row \(n)")
        }
    }

    @Test func cachedAttentionIsTheCausalSoftmaxAtEachPosition() {
        var r = Rand(22)
        let (T, H, G, D) = (9, 4, 2, 6)
        let q = r.floats(T * H * D, 2), k = r.floats(T * G * D, 2), v = r.floats(T * G * D)
        var naive = [Float](repeating: 0, count: T * H * D), att = [Float](repeating: 0, count: H * T * T)
        lm_attention_naive_forward(&naive, &att, q, k, v, 1, Int32(T), Int32(H), Int32(G), Int32(D))
        // Every position as its own row over the same cache (one sequence at offset 0).
        let positions = (0..<T).map(Int32.init), offsets = [Int](repeating: 0, count: T)
        var out = [Float](repeating: 0, count: T * H * D)
        var scratch = [Float](
            repeating: 0, count: lm_attention_cached_scratch_floats(Int32(H), Int32(G), Int32(T)))
        lm_attention_cached(
            &out, q, k, v, offsets, positions, Int32(H), Int32(G), Int32(D), &scratch, 0, T * G)
        #expect(maxDifference(out, naive) < 1e-5)
    }

    @Test func ropeAtPositionsIsTheTableRotation() {
        var r = Rand(23)
        let (T, heads, D) = (6, 3, 8)
        var cosT = [Float](repeating: 0, count: T * D / 2), sinT = cosT
        lm_rope_tables(&cosT, &sinT, Int32(T), Int32(D), 10000)
        let x = r.floats(T * heads * D)
        var inOrder = x
        lm_rope_forward(&inOrder, cosT, sinT, 1, Int32(T), Int32(heads), Int32(D))
        // The rows shuffled, each with its own position: the same rotation row by row.
        let order = [3, 0, 5, 1, 4, 2]
        let width = heads * D
        func rows(_ v: [Float]) -> [Float] {
            order.flatMap { (r: Int) -> [Float] in Array(v[(r * width)..<((r + 1) * width)]) }
        }
        var shuffled = rows(x)
        lm_rope_forward_at(&shuffled, cosT, sinT, order.map(Int32.init), Int32(T), Int32(heads), Int32(D))
        let expected = rows(inOrder)
        // (The training rope multiplies by a signed sine, so the two may round the last bit apart.)
        #expect(maxDifference(shuffled, expected) < 1e-6)
    }
}
