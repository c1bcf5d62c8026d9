// Decoding's kernels against twins written from the definitions, in double, and against themselves: the panel
// matmul gives every element the same bits whatever the number of rows beside it and however its channels are
// split over calls (what makes a sample independent of its batch); cached attention equals the naive causal
// softmax at each query's own position.
import Foundation
import Kernels
import TestSupport
import Testing

@Suite struct DecodeKernelTests {
    @Test func panelMatmulIsTheProductAndBatchInvariant() {
        var r = Rand(21)
        // N past a 6-row group, C past a 256-input block (and odd), OC past one 64-channel panel.
        let (N, C, OC) = (13, 301, 70)
        let inp = r.floats(N * C), weight = r.floats(OC * C)
        let panels = Int32((OC + 63) / 64)
        #expect(lm_panels_values(Int32(C), Int32(OC)) == 128 * C)
        let magnitude = (0..<N).map { n in (0..<C).map { abs(inp[n * C + $0]) }.reduce(0, +) }.max()!
        var packed = [Float](repeating: .nan, count: lm_panels_values(Int32(C), Int32(OC)))
        lm_pack_panels(&packed, weight, Int32(C), Int32(OC), 0, 1)
        lm_pack_panels(&packed, weight, Int32(C), Int32(OC), 1, panels)
        var out = [Float](repeating: 0, count: N * OC)
        lm_matmul_panels(&out, inp, packed, Int32(N), Int32(C), Int32(OC), 0, panels, 0)
        var naive = [Float](repeating: 0, count: N * OC)
        for n in 0..<N {
            for o in 0..<OC {
                var s = 0.0
                for c in 0..<C { s += Double(inp[n * C + c]) * Double(weight[o * C + c]) }
                naive[n * OC + o] = Float(s)
            }
        }
        #expect(maxDifference(out, naive) < 1e-6 * magnitude)
        // One fused multiply-add chain per element, in input order: what the kernel promises, bit for bit.
        let (n, o) = (11, 67)
        var chain: Float = 0
        for c in 0..<C { chain.addProduct(inp[n * C + c], weight[o * C + c]) }
        #expect(out[n * OC + o] == chain)
        // Each row alone, each run of rows, the panels one call each: the same bits.
        for rows in [1, 2, 3, 4, 5, 6] {
            var alone = [Float](repeating: 0, count: N * OC)
            var at = 0
            while at < N {
                let k = min(rows, N - at)
                let x = Array(inp[(at * C)..<((at + k) * C)])
                var part = [Float](repeating: 0, count: k * OC)
                for p in 0..<panels { lm_matmul_panels(&part, x, packed, Int32(k), Int32(C), Int32(OC), p, p + 1, 0) }
                for i in 0..<(k * OC) { alone[at * OC + i] = part[i] }
                at += k
            }
            #expect(alone == out, "rows in runs of \(rows)")
        }
        // Accumulating adds the same product to what is there.
        let base = r.floats(N * OC)
        var sum = base
        lm_matmul_panels(&sum, inp, packed, Int32(N), Int32(C), Int32(OC), 0, panels, 1)
        #expect(sum == zip(base, out).map { $0 + $1 })
    }

    @Test func bf16PanelsAreTheFp32ProductOfTheRoundedWeights() {
        var r = Rand(24)
        let (N, C, OC) = (5, 29, 100)
        let inp = r.floats(N * C), weight = r.floats(OC * C)
        let panels = Int32((OC + 63) / 64), values = lm_panels_values(Int32(C), Int32(OC))
        var halves = [UInt16](repeating: 0, count: values)
        lm_pack_panels_bf16(&halves, weight, Int32(C), Int32(OC), 0, panels)
        var rounded = [Float](repeating: 0, count: values)
        lm_pack_panels(&rounded, weight.map(lm_round_bf16), Int32(C), Int32(OC), 0, panels)
        var fromHalves = [Float](repeating: 0, count: N * OC), fromRounded = fromHalves
        lm_matmul_panels_bf16(&fromHalves, inp, halves, Int32(N), Int32(C), Int32(OC), 0, panels, 0)
        lm_matmul_panels(&fromRounded, inp, rounded, Int32(N), Int32(C), Int32(OC), 0, panels, 0)
        // Widening bf16 is exact, so the sums are the same chains over the same values.
        #expect(fromHalves == fromRounded)
        #expect(weight.map(lm_round_bf16) != weight)
    }

    @Test func streamSumIsTheSum() {
        let x = (0..<1003).map { Float($0 % 7) }
        #expect(lm_stream_sum(x, x.count) == x.reduce(0, +))
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
        // Units cut anywhere (a row's heads over two calls): the same bits.
        var cut = [Float](repeating: 0, count: T * H * D)
        for (first, end) in [(0, 3), (3, 8), (8, T * G)] {
            lm_attention_cached(
                &cut, q, k, v, offsets, positions, Int32(H), Int32(G), Int32(D), &scratch, first, end)
        }
        #expect(cut == out)
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
