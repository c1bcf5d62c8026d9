// Flash attention against its naive twin (the materialised kernel) and against finite differences, over the
// shapes that stress tiling: T = 1, T not a multiple of the tile, T spanning several tiles, query and key
// tiles of different sizes, GQA ratios 1, 2, 4 and 8, and head dimensions 64, 96 and 128. Also: splitting the
// work units over several calls (as threads do) gives bitwise the same result.
import Foundation
import Kernels
import Model
import TestSupport
import Testing

/// One attention problem: q (B,T,H,D), k and v (B,T,G,D), and an upstream gradient for out.
struct AttentionCase: CustomStringConvertible, Sendable {
    let B, T, H, G, D, bq, bk: Int
    var description: String { "B\(B) T\(T) H\(H) G\(G) D\(D) tiles \(bq)×\(bk)" }
}

struct AttentionData {
    let c: AttentionCase
    let q, k, v, dout: [Float]

    init(_ c: AttentionCase, seed: UInt64) {
        self.c = c
        var r = Rand(seed)
        q = r.floats(c.B * c.T * c.H * c.D, 2)
        k = r.floats(c.B * c.T * c.G * c.D, 2)
        v = r.floats(c.B * c.T * c.G * c.D)
        dout = r.floats(c.B * c.T * c.H * c.D)
    }

    /// Flash forward over the units in `splits` consecutive calls: (out, lse).
    func flashForward(
        q: [Float]? = nil, k: [Float]? = nil, v: [Float]? = nil, splits: Int = 1, bf16: Bool = false
    ) -> ([Float], [Float]) {
        var out = [Float](repeating: .nan, count: self.q.count), lse = [Float](repeating: .nan, count: c.B * c.H * c.T)
        let units = lm_flash_attention_forward_units(Int32(c.B), Int32(c.T), Int32(c.H), Int32(c.bq))
        let scratch = AlignedScratch(),
            bytes = lm_flash_attention_bf16_scratch_bytes(Int32(c.T), Int32(c.D), Int32(c.bq), Int32(c.bk))
        for s in 0..<splits {
            let (first, end) = (units * s / splits, units * (s + 1) / splits)
            if bf16 {
                #expect(
                    lm_flash_attention_forward_bf16(
                        &out, &lse, q ?? self.q, k ?? self.k, v ?? self.v, Int32(c.B), Int32(c.T), Int32(c.H),
                        Int32(c.G), Int32(c.D), Int32(c.bq), Int32(c.bk), first, end,
                        scratch.reserve(bytes), bytes) == Int32(LM_OK))
                withExtendedLifetime(scratch) {}
            } else {
                lm_flash_attention_forward(
                    &out, &lse, q ?? self.q, k ?? self.k, v ?? self.v, Int32(c.B), Int32(c.T), Int32(c.H),
                    Int32(c.G), Int32(c.D), Int32(c.bq), Int32(c.bk), first, end)
            }
        }
        return (out, lse)
    }

    func flashBackward(splits: Int = 1, bf16: Bool = false) -> (dq: [Float], dk: [Float], dv: [Float]) {
        let (out, lse) = flashForward(bf16: bf16)
        var dq = [Float](repeating: 0, count: q.count), dk = [Float](repeating: 0, count: k.count),
            dv = [Float](repeating: 0, count: v.count)
        let units = lm_flash_attention_backward_units(Int32(c.B), Int32(c.G))
        let scratch = AlignedScratch(),
            bytes = lm_flash_attention_bf16_scratch_bytes(Int32(c.T), Int32(c.D), Int32(c.bq), Int32(c.bk))
        for s in 0..<splits {
            let (first, end) = (units * s / splits, units * (s + 1) / splits)
            if bf16 {
                #expect(
                    lm_flash_attention_backward_bf16(
                        &dq, &dk, &dv, dout, out, lse, q, k, v, Int32(c.B), Int32(c.T), Int32(c.H),
                        Int32(c.G), Int32(c.D), Int32(c.bq), Int32(c.bk), first, end,
                        scratch.reserve(bytes), bytes) == Int32(LM_OK))
                withExtendedLifetime(scratch) {}
            } else {
                lm_flash_attention_backward(
                    &dq, &dk, &dv, dout, out, lse, q, k, v, Int32(c.B), Int32(c.T), Int32(c.H), Int32(c.G),
                    Int32(c.D), Int32(c.bq), Int32(c.bk), first, end)
            }
        }
        return (dq, dk, dv)
    }

    func naiveForward() -> (out: [Float], att: [Float]) {
        var out = [Float](repeating: 0, count: q.count), att = [Float](repeating: 0, count: c.B * c.H * c.T * c.T)
        lm_attention_naive_forward(&out, &att, q, k, v, Int32(c.B), Int32(c.T), Int32(c.H), Int32(c.G), Int32(c.D))
        return (out, att)
    }

    func naiveBackward() -> (dq: [Float], dk: [Float], dv: [Float]) {
        let att = naiveForward().att
        var dq = [Float](repeating: 0, count: q.count), dk = [Float](repeating: 0, count: k.count),
            dv = [Float](repeating: 0, count: v.count)
        var scratch = [Float](repeating: 0, count: c.T * c.T)
        lm_attention_naive_backward(
            &dq, &dk, &dv, &scratch, dout, att, q, k, v, Int32(c.B), Int32(c.T), Int32(c.H), Int32(c.G), Int32(c.D))
        return (dq, dk, dv)
    }
}

/// max |a − b| / max(max |b|, 1): float32 round-off of sums that ran in another order stays near 1e-6. The
/// floor of 1 (the inputs' own scale) keeps a gradient that is zero in exact arithmetic (T = 1: the softmax
/// of one score is constant) from dividing round-off by round-off.
func relativeDifference(_ a: [Float], _ b: [Float]) -> Float {
    maxDifference(a, b) / max(b.map { abs($0) }.max() ?? 0, 1)
}

@Suite struct FlashAttentionTests {
    static let cases: [AttentionCase] = [
        .init(B: 1, T: 1, H: 2, G: 1, D: 64, bq: 16, bk: 16),  // one token
        .init(B: 2, T: 37, H: 4, G: 4, D: 64, bq: 16, bk: 16),  // not a multiple of the tile; ratio 1
        .init(B: 1, T: 70, H: 4, G: 2, D: 96, bq: 16, bk: 32),  // tiles of different sizes; ratio 2
        .init(B: 1, T: 53, H: 8, G: 2, D: 128, bq: 32, bk: 16),  // rows above a key tile; ratio 4
        .init(B: 2, T: 150, H: 8, G: 1, D: 64, bq: 64, bk: 64),  // several tiles of the model's size; ratio 8
        .init(B: 1, T: 260, H: 2, G: 1, D: 16, bq: 128, bk: 128),  // the largest tile
    ]

    @Test(arguments: cases)
    func forwardAndBackwardMatchTheMaterialisedKernel(_ c: AttentionCase) {
        let data = AttentionData(c, seed: UInt64(c.T * 31 + c.D))
        let (out, lse) = data.flashForward()
        let naive = data.naiveForward()
        #expect(relativeDifference(out, naive.out) < 2e-6, "\(c): out differs by \(relativeDifference(out, naive.out))")
        // lse is the log of each row's softmax denominator, computed here in double from the definition.
        var worst = 0.0
        for b in 0..<c.B {
            for h in 0..<c.H {
                for t in 0..<c.T {
                    let g = h / (c.H / c.G)
                    var scores: [Double] = []
                    for j in 0...t {
                        var dot = 0.0
                        for d in 0..<c.D {
                            dot +=
                                Double(data.q[((b * c.T + t) * c.H + h) * c.D + d])
                                * Double(data.k[((b * c.T + j) * c.G + g) * c.D + d])
                        }
                        scores.append(dot / Double(c.D).squareRoot())
                    }
                    let m = scores.max()!
                    let expected = m + Foundation.log(scores.reduce(0) { $0 + Foundation.exp($1 - m) })
                    let got = Double(lse[(b * c.H + h) * c.T + t])
                    worst = got.isFinite ? max(worst, abs(got - expected) / max(1, abs(expected))) : .infinity
                }
            }
        }
        #expect(worst < 1e-5, "\(c): lse differs from the definition by \(worst)")
        let flash = data.flashBackward(), twin = data.naiveBackward()
        for (name, a, b) in [("dq", flash.dq, twin.dq), ("dk", flash.dk, twin.dk), ("dv", flash.dv, twin.dv)] {
            #expect(relativeDifference(a, b) < 1e-5, "\(c): \(name) differs by \(relativeDifference(a, b))")
        }
    }

    /// Work units split over several calls (as the model's threads split them) give the same bits.
    @Test func splittingTheUnitsChangesNoBit() {
        let data = AttentionData(.init(B: 2, T: 90, H: 8, G: 2, D: 64, bq: 32, bk: 32), seed: 7)
        #expect(data.flashForward().0 == data.flashForward(splits: 5).0)
        let one = data.flashBackward(), three = data.flashBackward(splits: 3)
        #expect(one.dq == three.dq && one.dk == three.dk && one.dv == three.dv)
    }

    /// The backward against finite differences of the flash forward itself.
    @Test(arguments: [(4, 2), (4, 1)])
    func backwardMatchesFiniteDifferences(heads H: Int, kvHeads G: Int) {
        let c = AttentionCase(B: 1, T: 11, H: H, G: G, D: 4, bq: 4, bk: 8)
        let data = AttentionData(c, seed: 9)
        let grads = data.flashBackward()
        func loss(q: [Float]? = nil, k: [Float]? = nil, v: [Float]? = nil) -> Double {
            weightedSum(data.flashForward(q: q, k: k, v: v).0, data.dout)
        }
        expectGradient("flash dq (H \(H), G \(G))", at: data.q, analytic: grads.dq) { loss(q: $0) }
        expectGradient("flash dk (H \(H), G \(G))", at: data.k, analytic: grads.dk) { loss(k: $0) }
        expectGradient("flash dv (H \(H), G \(G))", at: data.v, analytic: grads.dv) { loss(v: $0) }
    }
}

/// The bf16 tile products (AVX-512 BF16) and flash attention built on them.
@Suite(.enabled(if: PrecisionChoice.nativeBF16, "needs a CPU with AVX-512 BF16 or AMX"))
struct BF16AttentionTests {
    /// Every orientation, ragged sizes included, against a double-precision twin on the same bf16-rounded
    /// inputs: only fp32 accumulation is left (1e-5 · sqrt(k) of the terms' scale).
    @Test(arguments: [(0, 0), (0, 1), (1, 0), (1, 1)])
    func tileProductsMatchTheTwin(transA: Int, transB: Int) {
        var r = Rand(41)
        for (m, n, k) in [(64, 64, 64), (37, 48, 53), (5, 17, 3), (64, 128, 64)] {
            let (lda, ldb, ldc) = (transA == 1 ? m + 3 : k + 5, transB == 1 ? k + 2 : n + 7, n + 1)
            let a = r.floats((transA == 1 ? k : m) * lda).map { lm_round_bf16($0) },
                b = r.floats((transB == 1 ? n : k) * ldb).map { lm_round_bf16($0) }
            let old = r.floats(m * ldc)
            var c = old
            let scratch = AlignedScratch(), bytes = lm_tile_gemm_bf16_scratch_bytes(Int32(m), Int32(n), Int32(k))
            #expect(
                lm_tile_gemm_bf16(
                    Int32(transA), Int32(transB), Int32(m), Int32(n), Int32(k), 0.5, a, lda, b, ldb, 1, &c, ldc,
                    scratch.reserve(bytes), bytes) == Int32(LM_OK))
            withExtendedLifetime(scratch) {}
            var expected = old  // columns past n stay untouched
            for i in 0..<m {
                for j in 0..<n {
                    var s = 0.0
                    for p in 0..<k {
                        s +=
                            Double(transA == 1 ? a[p * lda + i] : a[i * lda + p])
                            * Double(transB == 1 ? b[j * ldb + p] : b[p * ldb + j])
                    }
                    expected[i * ldc + j] = Float(0.5 * s + Double(old[i * ldc + j]))
                }
            }
            let worst = maxDifference(c, expected)
            #expect(
                worst < 1e-5 * Float(k).squareRoot() * 4, "\(m)×\(n)×\(k) transA \(transA) transB \(transB): \(worst)")
        }
    }

    /// Flash attention with bf16 tiles against the fp32 materialised kernel. Tolerance from the 8-bit mantissa
    /// (u = 2^-8): a score of D products of inputs within ±2 moves by about 2u·sqrt(D) (q and k rounded),
    /// each probability by that much relatively, then P and V are rounded (2u more): outputs and gradients
    /// within 4u·sqrt(D) of their tensor's scale. Softmax, lse and every accumulation stay fp32.
    @Test(arguments: FlashAttentionTests.cases)
    func flashMatchesTheMaterialisedKernel(_ c: AttentionCase) {
        let data = AttentionData(c, seed: UInt64(c.T * 17 + c.D))
        let tolerance = 4 * Float(c.D).squareRoot() / 256
        let out = data.flashForward(bf16: true).0, naive = data.naiveForward().out
        #expect(relativeDifference(out, naive) < tolerance, "\(c): out differs by \(relativeDifference(out, naive))")
        let flash = data.flashBackward(bf16: true), twin = data.naiveBackward()
        for (name, a, b) in [("dq", flash.dq, twin.dq), ("dk", flash.dk, twin.dk), ("dv", flash.dv, twin.dv)] {
            #expect(relativeDifference(a, b) < tolerance, "\(c): \(name) differs by \(relativeDifference(a, b))")
        }
        #expect(relativeDifference(out, naive) > 0, "bf16 should round something")
    }

    /// Units split over several calls (threads) give bitwise the same bf16 result as one call: a range that
    /// starts mid-head repacks its K/V blocks instead of reusing another call's.
    @Test func unitRangesGiveTheSameResult() {
        let data = AttentionData(.init(B: 2, T: 90, H: 8, G: 2, D: 64, bq: 32, bk: 32), seed: 11)
        let one = data.flashForward(splits: 1, bf16: true), five = data.flashForward(splits: 5, bf16: true)
        #expect(one.0 == five.0 && one.1 == five.1)
        let backOne = data.flashBackward(splits: 1, bf16: true), backThree = data.flashBackward(splits: 3, bf16: true)
        #expect(backOne.dq == backThree.dq && backOne.dk == backThree.dk && backOne.dv == backThree.dv)
    }

    /// Scratch a byte short, or not 64-byte aligned, is refused with LM_ERROR_SCRATCH and nothing written.
    @Test func shortOrMisalignedScratchIsRefused() {
        let c = AttentionCase(B: 1, T: 40, H: 2, G: 1, D: 32, bq: 16, bk: 16)
        let data = AttentionData(c, seed: 3)
        let bytes = lm_flash_attention_bf16_scratch_bytes(Int32(c.T), Int32(c.D), Int32(c.bq), Int32(c.bk))
        let scratch = AlignedScratch(), base = scratch.reserve(bytes + 64)
        var out = [Float](repeating: .nan, count: data.q.count), lse = [Float](repeating: .nan, count: c.B * c.H * c.T)
        let units = lm_flash_attention_forward_units(Int32(c.B), Int32(c.T), Int32(c.H), Int32(c.bq))
        for (pointer, size) in [(base, bytes - 1), (base + 8, bytes)] {
            let status = lm_flash_attention_forward_bf16(
                &out, &lse, data.q, data.k, data.v, Int32(c.B), Int32(c.T), Int32(c.H), Int32(c.G), Int32(c.D),
                Int32(c.bq), Int32(c.bk), 0, units, pointer, size)
            #expect(status == Int32(LM_ERROR_SCRATCH))
        }
        #expect(out.allSatisfy { $0.isNaN }, "a refused call writes nothing")
        let scratchGemm = lm_tile_gemm_bf16_scratch_bytes(8, 8, 8)
        var c8 = [Float](repeating: 0, count: 64)
        #expect(
            lm_tile_gemm_bf16(0, 0, 8, 8, 8, 1, data.q, 8, data.k, 8, 0, &c8, 8, base, scratchGemm - 1)
                == Int32(LM_ERROR_SCRATCH))
        withExtendedLifetime(scratch) {}
    }
}
