// The MFU denominator: the machine's own matmul rate, measured in this process at start, so a progress
// line's MFU is a ratio of two rates taken side by side rather than a guess at a datasheet peak.
import Foundation
import Kernels
import Model

public enum MatmulRate {
    /// OpenBLAS's sgemm rate on a size³ square, median of 5 after a warm-up: the MFU denominator of training.
    public static func sgemm(size n: Int) -> Double {
        let a = FloatBuffer(count: n * n), w = FloatBuffer(count: n * n), out = FloatBuffer(count: n * n)
        for i in 0..<a.count { a[i] = Float(i % 7) - 3; w[i] = Float(i % 5) - 2 }
        var times: [Double] = []
        for _ in 0..<6 {
            let t0 = monotonicSeconds()
            lm_matmul_forward(out.pointer, a.pointer, w.pointer, Int32(n), Int32(n), Int32(n), 0)
            times.append(monotonicSeconds() - t0)
        }
        return 2 * Double(n * n * n) / Array(times.dropFirst()).median / 1e9
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
