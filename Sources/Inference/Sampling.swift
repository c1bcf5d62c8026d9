// Sampling one token from a row of logits, and saying exactly which distribution it came from.
//
// The order is transformers' (temperature, then top-k, then top-p over what top-k kept, renormalised): z =
// logits / T; top-k keeps the k largest z (ties: the lower id first); top-p keeps the smallest prefix of those,
// by descending probability, whose mass reaches p. The token is drawn from the kept set renormalised, and two
// log-probs are reported:
//   - `logprob`: the log-probability under that tempered, truncated distribution, the one it was drawn from;
//   - `fullLogprob`: log_softmax(logits / T) at the token over the whole vocabulary, untruncated, what PPO and
//     DPO use (TRL's log-probs of the policy are of the tempered logits, and untruncated).
// Greedy (T = 0) takes the largest logit (the lower id on a tie): `logprob` is 0 (a point mass) and
// `fullLogprob` is log_softmax(logits) at T = 1.
// Each sample draws from its own stream, seeded by (seed, prompt index, sample index) alone, so what it draws
// does not depend on the ranks, the batch or what else is decoded beside it.
import Foundation
import Support

public struct SamplingOptions: Sendable, Equatable {
    public var temperature: Double
    /// 1: no nucleus truncation.
    public var topP: Double
    /// 0: no top-k truncation.
    public var topK: Int
    public var maxTokens: Int
    /// Text that ends a sample (not included in its text; its tokens are kept in the ids).
    public var stop: [String]
    public var seed: UInt64

    public init(
        temperature: Double = 1, topP: Double = 1, topK: Int = 0, maxTokens: Int = 64, stop: [String] = [],
        seed: UInt64 = 1
    ) {
        (self.temperature, self.topP, self.topK, self.maxTokens, self.stop, self.seed) = (
            temperature, topP, topK, maxTokens, stop, seed
        )
    }
}

public struct SampledToken: Sendable, Equatable {
    public var id: Int32
    /// Under the distribution it was drawn from (tempered, truncated, renormalised).
    public var logprob: Double
    /// log_softmax(logits / T) at the token, untruncated (T = 1 when greedy).
    public var fullLogprob: Double
}

public enum Sampler {
    /// The stream of sample `sample` of prompt `prompt`.
    public static func stream(seed: UInt64, prompt: Int, sample: Int) -> SplitMix64 {
        var mixer = SplitMix64(seed: seed)
        let a = mixer.next() ^ UInt64(truncatingIfNeeded: prompt)
        var second = SplitMix64(seed: a)
        return SplitMix64(seed: second.next() ^ (UInt64(truncatingIfNeeded: sample) &* 0x9E37_79B9_7F4A_7C15))
    }

    public static func sample(
        _ logits: UnsafeBufferPointer<Float>, _ o: SamplingOptions, rng: inout SplitMix64
    )
        -> SampledToken
    {
        let V = logits.count
        if o.temperature <= 0 {
            var best = 0
            for i in 1..<V where logits[i] > logits[best] { best = i }
            return SampledToken(id: Int32(best), logprob: 0, fullLogprob: logSoftmax(logits, at: best, temperature: 1))
        }
        let t = o.temperature
        var top = Double(-Float.infinity)
        for x in logits { top = max(top, Double(x)) }
        // Unnormalised probabilities relative to the largest: e^((z − max)/T), in double.
        var total = 0.0
        for x in logits { total += Foundation.exp((Double(x) - top) / t) }
        let kept = truncated(logits, top: top, total: total, o)
        var mass = 0.0
        for (_, weight) in kept { mass += weight }
        // u in [0, mass) (nextUnit is in (0, 1]); a rounding shortfall at the end takes the last candidate
        // that has any weight.
        var u = (1 - rng.nextUnit()) * mass
        var chosen = kept.last { $0.weight > 0 } ?? kept[0]
        for candidate in kept {
            u -= candidate.weight
            if u < 0 {
                chosen = candidate
                break
            }
        }
        let id = chosen.id
        let full = (Double(logits[id]) - top) / t - Foundation.log(total)
        return SampledToken(id: Int32(id), logprob: Foundation.log(chosen.weight / mass), fullLogprob: full)
    }

    /// log_softmax(logits / T) at `index`, in double.
    public static func logSoftmax(_ logits: UnsafeBufferPointer<Float>, at index: Int, temperature t: Double) -> Double
    {
        let (top, total) = normalizer(logits, temperature: t)
        return (Double(logits[index]) - top) / t - Foundation.log(total)
    }

    /// What softmax(logits / T) divides by: the largest logit and Σ exp((z − top) / T), in double. The
    /// probability of id k is exp((z_k − top) / T) / total.
    public static func normalizer(
        _ logits: UnsafeBufferPointer<Float>, temperature t: Double
    ) -> (
        top: Double, total: Double
    ) {
        var top = Double(-Float.infinity)
        for x in logits { top = max(top, Double(x)) }
        var total = 0.0
        for x in logits { total += Foundation.exp((Double(x) - top) / t) }
        return (top, total)
    }

    /// log_softmax(logits / T) at `index` and the entropy of softmax(logits / T), from one pass over the row.
    public static func logSoftmaxAndEntropy(
        _ logits: UnsafeBufferPointer<Float>, at index: Int, temperature t: Double
    ) -> (logprob: Double, entropy: Double) {
        var top = Double(-Float.infinity)
        for x in logits { top = max(top, Double(x)) }
        var total = 0.0, weighted = 0.0
        for z in logits {
            let x = (Double(z) - top) / t, e = Foundation.exp(x)
            total += e
            weighted += e * x
        }
        let logTotal = Foundation.log(total)
        return ((Double(logits[index]) - top) / t - logTotal, logTotal - weighted / total)
    }

    /// The kept candidates, by descending probability (ties: lower id first), with their unnormalised weights.
    static func truncated(
        _ logits: UnsafeBufferPointer<Float>, top: Double, total: Double, _ o: SamplingOptions
    )
        -> [(id: Int, weight: Double)]
    {
        let V = logits.count, k = o.topK > 0 ? min(o.topK, V) : V
        func weight(_ i: Int) -> Double { Foundation.exp((Double(logits[i]) - top) / o.temperature) }
        if k == V && o.topP >= 1 { return (0..<V).map { ($0, weight($0)) } }
        // Sorting all V ids per token would cost more than the decode at batch 32, so the ids above a threshold
        // are sorted first: with top-k, once there are k of them they hold the top k; without, once they hold
        // the top-p mass the nucleus ends among them. Either way every id below is cut, so this is exact;
        // otherwise the threshold drops and the search repeats.
        let need = o.topP * total
        var threshold = top - 20 * o.temperature
        while true {
            var candidates: [(id: Int, weight: Double)] = []
            var mass = 0.0
            for i in 0..<V where Double(logits[i]) >= threshold || threshold == -.infinity {
                let w = weight(i)
                candidates.append((i, w))
                mass += w
            }
            // Exact once the ids above the threshold include the top k (top-k), or reach the top-p mass (no top-k).
            let enough = k < V ? candidates.count >= k : mass >= need
            if threshold == -.infinity || enough {
                candidates.sort { $0.weight != $1.weight ? $0.weight > $1.weight : $0.id < $1.id }
                if candidates.count > k { candidates.removeLast(candidates.count - k) }
                guard o.topP < 1 else { return candidates }
                // top-p over the top-k set renormalised (the whole vocabulary without top-k).
                let keptMass = k < V ? candidates.reduce(0.0) { $0 + $1.weight } : total, goal = o.topP * keptMass
                var sum = 0.0, end = 0
                while end < candidates.count {
                    sum += candidates[end].weight
                    end += 1
                    if sum >= goal { break }
                }
                return Array(candidates[..<end])
            }
            let lower = threshold - 20 * o.temperature
            // A temperature so small that the step is lost in rounding, or far enough: take every id.
            threshold = lower == threshold || lower < top - 2000 * o.temperature ? -.infinity : lower
        }
    }
}
