// bf16 matmuls (oneDNN) against float32 naive twins: every orientation of the primitive, with and without
// accumulation (the model's products are these orientations; the Hugging Face test in bf16 covers them in
// place). The twins take the same bf16-rounded inputs and sum in double, so what is left is fp32
// accumulation (about sqrt(K)·2^-24 of the terms' scale): 1e-5·sqrt(K) covers it, and a wrong orientation or
// a dropped accumulation is off by O(1).
import Foundation
import Kernels
import Model
import TestSupport
import Testing

@Suite(.enabled(if: PrecisionChoice.nativeBF16, "needs a CPU with AVX-512 BF16 or AMX"))
struct BF16MatmulTests {
    /// Rounds like the kernel: to nearest even.
    func rounded(_ x: [Float]) -> [Float] { x.map { lm_round_bf16($0) } }

    func bits(_ x: [Float]) -> [UInt16] {
        var out = [UInt16](repeating: 0, count: x.count)
        lm_to_bf16(&out, x, x.count)
        return out
    }

    @Test func roundingIsToNearestEvenAndKeepsSpecials() {
        // 7 stored mantissa bits: the step above 1 is 2^-7.
        #expect(lm_round_bf16(1 + 1.0 / 256) == 1)  // halfway between 1 and 1 + 2^-7: to the even one, 1
        #expect(lm_round_bf16(1 + 3.0 / 256) == 1 + 1.0 / 64)  // halfway with the odd one below: up
        #expect(lm_round_bf16(1 + 1.0 / 256 + 1.0 / 4096) == 1 + 1.0 / 128)  // past halfway: up
        #expect(lm_round_bf16(.infinity) == .infinity && lm_round_bf16(-.infinity) == -.infinity)
        #expect(lm_round_bf16(.nan).isNaN && lm_round_bf16(-0.0).sign == .minus)
        var back = [Float](repeating: 0, count: 3)
        lm_from_bf16(&back, bits([0.5, -3, 1e30]), 3)
        #expect(back[0] == 0.5 && back[1] == -3 && abs(back[2] / 1e30 - 1) < 1.0 / 128)
    }

    @Test(arguments: [(0, 0), (0, 1), (1, 0), (1, 1)])
    func everyOrientationMatchesTheTwin(transA: Int, transB: Int) throws {
        let engine = try OneDNNMatmuls()
        var r = Rand(31)
        let (m, n, k) = (37, 29, 53)
        for accumulate in [0, 1] {
            let a = rounded(r.floats(m * k)), b = rounded(r.floats(k * n)), old = r.floats(m * n)
            // Stored as given by the flags: a as (k,m) when transposed, b as (n,k).
            func aAt(_ i: Int, _ p: Int) -> Float { transA == 1 ? a[p * m + i] : a[i * k + p] }
            func bAt(_ p: Int, _ j: Int) -> Float { transB == 1 ? b[j * k + p] : b[p * n + j] }
            var c = old
            try engine.multiply(
                &c, bits(a), bits(b), m: m, n: n, k: k, transA: transA == 1, transB: transB == 1,
                accumulate: accumulate == 1)
            var naive = [Float](repeating: 0, count: m * n)
            for i in 0..<m {
                for j in 0..<n {
                    var s = accumulate == 1 ? Double(old[i * n + j]) : 0
                    for p in 0..<k { s += Double(aAt(i, p)) * Double(bAt(p, j)) }
                    naive[i * n + j] = Float(s)
                }
            }
            #expect(
                maxDifference(c, naive) < 1e-5 * Float(k).squareRoot() * 4,
                "transA \(transA) transB \(transB) accumulate \(accumulate)")
        }
    }
}
