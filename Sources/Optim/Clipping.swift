// Global-norm gradient clipping as torch.nn.utils.clip_grad_norm_ computes it:
// every gradient is scaled by min(1, maxNorm / (norm + 1e-6)), the norm taken over all parameters at once.
// The norm is split out so that a data-parallel caller can sum squares across ranks first; the pointer forms
// serve a sharded caller that holds only its own range of the gradients. Large buffers are summed in fixed
// blocks of 2^20 (spread over `threads`) whose partial sums are added in order, so the norm has the same
// bits for any thread count.
import Foundation
import Kernels
import Model

public enum GradientClipping {
    /// Σ g² over the whole buffer, in double.
    public static func sumOfSquares(_ gradients: FloatBuffer) -> Double {
        sumOfSquares(gradients.pointer, count: gradients.count)
    }

    static let block = 1 << 20

    public static func sumOfSquares(_ gradients: UnsafePointer<Float>, count: Int, threads: Int = 1) -> Double {
        let blocks = (count + block - 1) / block
        guard blocks > 1 else { return lm_sum_squares(gradients, count) }
        var partial = [Double](repeating: 0, count: blocks)
        partial.withUnsafeMutableBufferPointer { out in
            nonisolated(unsafe) let (g, sums) = (gradients, out.baseAddress!)
            let workers = min(max(1, threads), blocks)
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                for b in stride(from: w, to: blocks, by: workers) {
                    sums[b] = lm_sum_squares(g + b * block, min(block, count - b * block))
                }
            }
        }
        return partial.reduce(0, +)
    }

    /// Scales `gradients` for a global norm `norm`; returns the factor applied.
    @discardableResult
    public static func scale(_ gradients: FloatBuffer, norm: Double, maxNorm: Double) -> Float {
        scale(gradients.pointer, count: gradients.count, norm: norm, maxNorm: maxNorm)
    }

    @discardableResult
    public static func scale(
        _ gradients: UnsafeMutablePointer<Float>, count: Int, norm: Double, maxNorm: Double, threads: Int = 1
    ) -> Float {
        let factor = Float(min(1.0, maxNorm / (norm + 1e-6)))
        guard factor < 1 else { return factor }
        nonisolated(unsafe) let g = gradients
        let workers = count >= block ? max(1, threads) : 1
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            let first = count * w / workers, end = count * (w + 1) / workers
            lm_scale(g + first, end - first, factor)
        }
        return factor
    }

    /// Clips in place and returns the norm before clipping.
    @discardableResult
    public static func clip(_ gradients: FloatBuffer, maxNorm: Double, threads: Int = 1) -> Double {
        let norm = sumOfSquares(gradients.pointer, count: gradients.count, threads: threads).squareRoot()
        scale(gradients.pointer, count: gradients.count, norm: norm, maxNorm: maxNorm, threads: threads)
        return norm
    }
}
