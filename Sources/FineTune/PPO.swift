// PPO's arithmetic as Llama 2 (section 3.2.3) and the RLHF issue state it, apart from any model: the
// per-token rewards, generalised advantage estimation, whitening over the whole batch on every rank, and the
// clipped policy and value losses with their gradients. Sums, not means: a caller divides by the global token
// count, as every objective's `scale` does.
//   r_t = −β (log π_old(y_t) − log π_ref(y_t)), plus R̃ = whiten(raw score) on the last token
//   δ_t = r_t + γ V_{t+1} − V_t (V = 0 after the last token), A_t = δ_t + γλ A_{t+1}, returns = A + V
//   policy: max(−A ρ, −A clip(ρ, 1 ± ε)), ρ = exp(log π_θ − log π_old)
//   value:  ½ max((V − R)², (clip(V, V_old ± c) − R)²)
//   whiten(x) = (x − mean x) / sqrt(var x + 1e-8), the variance unbiased
// What this is not: the rollouts, the models or the loop (PPOObjective).
import Distributed
import Foundation

public enum PPOMath {
    /// Whitens `values` (this rank's) over every rank's: the global mean and unbiased variance, two
    /// allreduces (mean first, then squared deviations, which keeps the variance exact to rounding).
    public static func whiten(_ values: [Double], world: Communicator?) throws -> [Double] {
        var moments = [values.reduce(0, +), Double(values.count)]
        if let world {
            try moments.withUnsafeMutableBufferPointer { try world.allreduceSum($0.baseAddress!, count: 2) }
        }
        let count = moments[1]
        guard count > 1 else { return values.map { _ in 0 } }
        let mean = moments[0] / count
        var squares = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
        if let world { squares = try world.allreduceSum(squares) }
        let scale = 1 / (squares / (count - 1) + 1e-8).squareRoot()
        return values.map { ($0 - mean) * scale }
    }

    /// The reward of each response token: the KL penalty everywhere, the whitened score on the last.
    public static func tokenRewards(old: [Double], reference: [Double], score: Double, klCoef: Double) -> [Double] {
        var rewards = zip(old, reference).map { -klCoef * ($0 - $1) }
        if !rewards.isEmpty { rewards[rewards.count - 1] += score }
        return rewards
    }

    /// Generalised advantage estimation over one response: A_t = Σ_k (γλ)^k δ_{t+k}.
    public static func advantages(rewards: [Double], values: [Double], gamma: Double, lambda: Double) -> [Double] {
        var out = [Double](repeating: 0, count: rewards.count)
        var running = 0.0
        for t in rewards.indices.reversed() {
            let next = t + 1 < values.count ? values[t + 1] : 0
            running = rewards[t] + gamma * next - values[t] + gamma * lambda * running
            out[t] = running
        }
        return out
    }

    /// The clipped surrogate summed over tokens, its gradient with respect to each new log-prob, how many
    /// tokens the clip held, and Σ ½ (log π_θ − log π_old)² (the approximate KL, TRL's).
    public struct PolicyTerms {
        public var loss = 0.0
        public var gradient: [Double] = []
        public var clipped = 0
        public var approximateKL = 0.0
    }

    public static func policyLoss(new: [Double], old: [Double], advantages: [Double], clip: Double) -> PolicyTerms {
        var terms = PolicyTerms()
        terms.gradient.reserveCapacity(new.count)
        for t in new.indices {
            let ratio = Foundation.exp(new[t] - old[t]), a = advantages[t]
            let unclipped = -a * ratio, clipped = -a * min(max(ratio, 1 - clip), 1 + clip)
            terms.loss += max(unclipped, clipped)
            // The clipped branch is flat in θ: it passes no gradient when it is the larger.
            let held = clipped > unclipped
            terms.gradient.append(held ? 0 : unclipped)
            if held { terms.clipped += 1 }
            terms.approximateKL += 0.5 * (new[t] - old[t]) * (new[t] - old[t])
        }
        return terms
    }

    /// The clipped value loss summed over tokens, its gradient with respect to each value, and how many tokens
    /// the clip held.
    public static func valueLoss(
        values: [Double], oldValues: [Double], returns: [Double], clip: Double
    ) -> (loss: Double, gradient: [Double], clipped: Int) {
        var loss = 0.0, gradient: [Double] = [], held = 0
        gradient.reserveCapacity(values.count)
        for t in values.indices {
            let v = values[t], r = returns[t]
            let bounded = min(max(v, oldValues[t] - clip), oldValues[t] + clip)
            let plain = (v - r) * (v - r), clipped = (bounded - r) * (bounded - r)
            loss += 0.5 * max(plain, clipped)
            if clipped > plain {
                // Only a value outside V_old ± c makes the clipped branch the larger, and there it is flat in V.
                held += 1
                gradient.append(0)
            } else {
                gradient.append(v - r)
            }
        }
        return (loss, gradient, held)
    }
}
