// The MFU denominator: the machine's own matmul rate, measured in this process at start, so a progress
// line's MFU is a ratio of two rates taken side by side rather than a guess at a datasheet peak.
import Foundation
import Kernels
import Model
import Support

public enum MatmulRate {
    /// OpenBLAS's sgemm rate on a size³ square: the MFU denominator of training.
    public static func sgemm(size n: Int) -> Double { sgemm(m: n, k: n, oc: n) }

    /// GFLOP/s of the model's matmul (m, k) · (oc, k)ᵀ on random values, median of 5 calls after a warm-up.
    public static func sgemm(m: Int, k: Int, oc: Int) -> Double {
        let a = FloatBuffer(count: m * k), w = FloatBuffer(count: oc * k), out = FloatBuffer(count: m * oc)
        var rng = SplitMix64(seed: 7)
        for i in 0..<a.count { a[i] = Float(rng.nextUnit() - 0.5) }
        for i in 0..<w.count { w[i] = Float(rng.nextUnit() - 0.5) }
        var times: [Double] = []
        for _ in 0..<6 {
            let t0 = monotonicSeconds()
            lm_matmul_forward(out.pointer, a.pointer, w.pointer, Int32(m), Int32(k), Int32(oc), 0)
            times.append(monotonicSeconds() - t0)
        }
        return 2 * Double(m) * Double(k) * Double(oc) / Array(times.dropFirst()).median / 1e9
    }

}

/// Seconds on the monotonic clock, for timing.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

extension Array where Element == Double {
    public var median: Double {
        guard !isEmpty else { return 0 }
        let s = sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}
