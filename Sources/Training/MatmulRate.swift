// The MFU denominator: the machine's own matmul rate, measured in this process at start, so a progress
// line's MFU is a ratio of two rates taken side by side rather than a guess at a datasheet peak.
import Foundation
import Kernels
import Model
import Support

public enum MatmulRate {
    /// GFLOP/s of the model's matmul (m, k) · (oc, k)ᵀ in `precision` on random values, median of 5 calls
    /// after a warm-up: sgemm, or oneDNN's bf16 primitive on inputs already in bf16 (the engine's own rate;
    /// the step's rounding of inputs is the step's cost, not the engine's).
    public static func rate(_ precision: Precision, m: Int, k: Int, oc: Int) throws -> Double {
        let a = FloatBuffer(count: m * k), w = FloatBuffer(count: oc * k), out = FloatBuffer(count: m * oc)
        var rng = SplitMix64(seed: 7)
        for i in 0..<a.count { a[i] = Float(rng.nextUnit() - 0.5) }
        for i in 0..<w.count { w[i] = Float(rng.nextUnit() - 0.5) }
        var a16 = [UInt16](), w16 = [UInt16]()
        let engine = precision == .bf16 ? try OneDNNMatmuls() : nil
        if precision == .bf16 {
            a16 = [UInt16](repeating: 0, count: a.count)
            w16 = [UInt16](repeating: 0, count: w.count)
            lm_to_bf16(&a16, a.pointer, a.count)
            lm_to_bf16(&w16, w.pointer, w.count)
        }
        var times: [Double] = []
        for _ in 0..<6 {
            let t0 = monotonicSeconds()
            if let engine {
                try engine.multiply(
                    out.pointer, a16, w16, m: m, n: oc, k: k, transA: false, transB: true, accumulate: false)
            } else {
                lm_matmul_forward(out.pointer, a.pointer, w.pointer, Int32(m), Int32(k), Int32(oc), 0)
            }
            times.append(monotonicSeconds() - t0)
        }
        return 2 * Double(m) * Double(k) * Double(oc) / Array(times.dropFirst()).median / 1e9
    }
}
