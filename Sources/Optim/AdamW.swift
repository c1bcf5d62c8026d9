// AdamW as torch.optim.AdamW computes it (decoupled weight decay, bias correction), over flat buffers.
//
// The moments m and v share the parameters' layout, so the update is one fused C loop per tensor; the
// per-tensor split exists only to apply weight decay to matrices and not to the RMSNorm gains.
import Foundation
import Kernels
import Model
import Support

public struct AdamWSettings: Codable, Equatable, Sendable {
    /// Llama 2 (paper §2.2): β1 0.9, β2 0.95, eps 1e-5, weight decay 0.1.
    public var beta1: Float
    public var beta2: Float
    public var eps: Float
    public var weightDecay: Float

    public init(beta1: Float = 0.9, beta2: Float = 0.95, eps: Float = 1e-5, weightDecay: Float = 0.1) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weightDecay = weightDecay
    }

    enum CodingKeys: String, CodingKey {
        case beta1, beta2, eps, weightDecay = "weight_decay"
    }
}

public final class AdamW {
    public let settings: AdamWSettings
    public let layout: ParameterLayout
    /// What this optimizer updates: all of the layout, or a rank's own pieces under sharding.
    public let pieces: HeldPieces
    /// First and second moments of `pieces`, end to end as the pieces are.
    public let m: FloatBuffer
    public let v: FloatBuffer
    /// Steps taken so far; the next update is step `step + 1` for bias correction.
    public var step: Int = 0

    public init(layout: ParameterLayout, pieces: HeldPieces? = nil, settings: AdamWSettings = AdamWSettings()) {
        self.layout = layout
        self.settings = settings
        self.pieces = pieces ?? .whole(layout.count)
        m = FloatBuffer(count: self.pieces.count)
        v = FloatBuffer(count: self.pieces.count)
    }

    /// Threads each large tensor's update is spread over (the rank's --threads).
    public var threads = 1

    /// One update of the full buffers (the pieces must be the whole layout).
    public func update(parameters: FloatBuffer, gradients: FloatBuffer, learningRate: Float) {
        precondition(
            pieces.isWhole(of: layout.count) && parameters.count == layout.count && gradients.count == layout.count)
        update(parameters: parameters.pointer, gradients: gradients.pointer, learningRate: learningRate)
    }

    /// One update of the pieces: `parameters` and `gradients` hold them end to end, as m and v do. Each
    /// tensor's part in a piece decays if the tensor is a matrix, so a sharded update equals the replicated one.
    /// `parametersAreWhole`: `parameters` is the whole layout (sharding `gradients` and `optimizer` keep every
    /// parameter while updating only their pieces), indexed globally.
    public func update(
        parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>, learningRate: Float,
        parametersAreWhole: Bool = false
    ) {
        step += 1
        let t = Double(step)
        let bc1 = Float(1 - pow(Double(settings.beta1), t))
        let bc2 = Float(1 - pow(Double(settings.beta2), t))
        for spec in layout.tensors {
            for part in pieces.parts(of: spec.offset..<(spec.offset + spec.count)) {
                let o = part.local, n = part.range.count
                let po = parametersAreWhole ? part.range.lowerBound : o
                nonisolated(unsafe) let (p, g, mm, vv) = (parameters + po, gradients + o, m.pointer + o, v.pointer + o)
                let (s, decay) = (settings, spec.decays ? settings.weightDecay : 0)
                // Element by element, so any split over threads gives the same bits; small tensors stay on one.
                let parts = n >= 1 << 16 ? max(1, threads) : 1
                DispatchQueue.concurrentPerform(iterations: parts) { i in
                    let first = n * i / parts, end = n * (i + 1) / parts
                    lm_adamw_update(
                        p + first, g + first, mm + first, vv + first, end - first,
                        learningRate, s.beta1, s.beta2, s.eps, decay, bc1, bc2)
                }
            }
        }
    }
}

#if canImport(Glibc)
    import Glibc
#else
    import Darwin
#endif
