// Global-norm gradient clipping as torch.nn.utils.clip_grad_norm_ computes it:
// every gradient is scaled by min(1, maxNorm / (norm + 1e-6)), the norm taken over all parameters at once.
// The norm is split out so that a data-parallel caller can sum squares across ranks first; the pointer forms
// serve a sharded caller that holds only its own range of the gradients.
import Kernels
import Model

public enum GradientClipping {
    /// Σ g² over the whole buffer, in double.
    public static func sumOfSquares(_ gradients: FloatBuffer) -> Double {
        sumOfSquares(gradients.pointer, count: gradients.count)
    }

    public static func sumOfSquares(_ gradients: UnsafePointer<Float>, count: Int) -> Double {
        lm_sum_squares(gradients, count)
    }

    /// Scales `gradients` for a global norm `norm`; returns the factor applied.
    @discardableResult
    public static func scale(_ gradients: FloatBuffer, norm: Double, maxNorm: Double) -> Float {
        scale(gradients.pointer, count: gradients.count, norm: norm, maxNorm: maxNorm)
    }

    @discardableResult
    public static func scale(_ gradients: UnsafeMutablePointer<Float>, count: Int, norm: Double, maxNorm: Double) -> Float {
        let factor = Float(min(1.0, maxNorm / (norm + 1e-6)))
        if factor < 1 { lm_scale(gradients, count, factor) }
        return factor
    }

    /// Clips in place and returns the norm before clipping.
    @discardableResult
    public static func clip(_ gradients: FloatBuffer, maxNorm: Double) -> Double {
        let norm = sumOfSquares(gradients).squareRoot()
        scale(gradients, norm: norm, maxNorm: maxNorm)
        return norm
    }
}
