// Reward models (Llama 2 §3.2.2): the language model's trunk with a scalar head read at the last token of
// prompt + response, trained with the binary ranking loss with a margin,
//     L = −log σ(r(x, y_chosen) − r(x, y_rejected) − m(rating)),
// averaged over the pairs of the global batch; and the evaluation of Table 28 (accuracy per rating).

import Configuration
import Foundation
import Model
import Support
import Training

/// −log σ(d) = softplus(−d), computed without overflow.
@inline(__always) func softplus(_ x: Double) -> Double { max(x, 0) + log1p(exp(-abs(x))) }

public final class RewardObjective: TrainingObjective {
    public let name = "reward model"
    let pairs: [PreferencePair]
    let pairsPerBatch: Int
    let microPairs: Int
    let seqLen: Int
    let seed: UInt64
    let padToken: Int32
    private var current: [PreferencePair] = []
    /// This rank's pairs of the loaded step.
    var currentPairs: [PreferencePair] { current }
    private var cachedOrder: (epoch: Int, order: [Int])?

    public init(
        pairs: [PreferencePair], pairsPerBatch: Int, microBatchSequences: Int, seqLen: Int, seed: UInt64,
        padToken: Int32
    ) throws {
        guard microBatchSequences >= 2, microBatchSequences % 2 == 0 else {
            throw TrainingError(
                "train.micro_batch is \(microBatchSequences) sequences; a reward model needs an even number (chosen and rejected of each pair)"
            )
        }
        self.pairs = pairs
        self.pairsPerBatch = pairsPerBatch
        microPairs = microBatchSequences / 2
        self.seqLen = seqLen
        self.seed = seed
        self.padToken = padToken
    }

    public var tokensPerStep: Int { pairsPerBatch * 2 * seqLen }
    public var batchDescription: String {
        "\(pairsPerBatch) preference pairs (\(2 * pairsPerBatch) sequences of up to \(seqLen) tokens)"
    }

    public func accumulation(worldSize: Int, file: String?) throws -> Int {
        guard pairsPerBatch % (microPairs * worldSize) == 0 else {
            throw ConfigError(
                file: file, field: "finetune.pairs_per_batch",
                message:
                    "\(pairsPerBatch) pairs do not split into micro-batches of \(microPairs) pairs on \(worldSize) rank(s)"
            )
        }
        return pairsPerBatch / (microPairs * worldSize)
    }

    public func load(step k: Int, rank: Int, worldSize: Int) throws -> Double {
        let perRank = pairsPerBatch / worldSize
        current = (0..<perRank).map { i in
            let g = k * pairsPerBatch + rank * perRank + i
            let epoch = g / pairs.count
            if cachedOrder?.epoch != epoch {
                cachedOrder = (epoch, PreferenceData.order(count: pairs.count, seed: seed, epoch: epoch))
            }
            return pairs[cachedOrder!.order[g % pairs.count]]
        }
        return Double(perRank)
    }

    public func microStep(_ m: Int, models: ModelSet, scale: Float, gradientsReady: ((Int) -> Void)?) throws -> Double {
        let model = models.primary
        let batch = Array(current[(m * microPairs)..<((m + 1) * microPairs)])
        let rewards = try Self.forward(
            batch.flatMap { [$0.chosen, $0.rejected] }, model: model, seqLen: seqLen, padToken: padToken)
        var loss = 0.0
        var gradients: [(position: Int, value: Float)] = []
        for (i, pair) in batch.enumerated() {
            let d = Double(rewards.values[2 * i] - rewards.values[2 * i + 1] - pair.margin)
            loss += softplus(-d)
            let slope = Float(1 / (1 + exp(d)))  // −∂L/∂d = σ(−d)
            gradients.append((rewards.positions[2 * i], -slope * scale))
            gradients.append((rewards.positions[2 * i + 1], slope * scale))
        }
        try model.backward(
            heads: [
                .score: .given({ dscores in
                    dscores.update(repeating: 0)
                    for g in gradients { dscores[g.position] = g.value }
                })
            ], gradientsReady: gradientsReady)
        return loss
    }

    /// Rewards of sequences (each at most seqLen tokens), read at each one's last token; `positions` index the
    /// (B·T) logits. Sequences are padded after their end, which causal attention never lets them see.
    static func forward(
        _ sequences: [[Int32]], model: LlamaModel, seqLen: Int, padToken: Int32
    ) throws -> (values: [Float], positions: [Int]) {
        var tokens: [Int32] = []
        var positions: [Int] = []
        for (b, s) in sequences.enumerated() {
            tokens += s + [Int32](repeating: padToken, count: seqLen - s.count)
            positions.append(b * seqLen + s.count - 1)
        }
        let targets = [Int32](repeating: LlamaModel.ignoreIndex, count: tokens.count)
        _ = try model.forward(tokens: tokens, targets: targets, batch: sequences.count, seqLen: seqLen)
        let scores = model.outputs(of: .score)
        return (positions.map { scores[$0] }, positions)
    }
}

/// Accuracy per rating and the spread of the reward margin on held-out pairs (Llama 2 Table 28's layout).
public struct RewardEvaluation: Codable, Sendable {
    public var pairs: [Int] = [0, 0, 0, 0]
    public var correct: [Int] = [0, 0, 0, 0]
    public var margins: [[Double]] = [[], [], [], []]
    /// Every pair's reward of its chosen and of its rejected response, for the score density (Figure 27).
    public var chosenScores: [Double] = []
    public var rejectedScores: [Double] = []

    public static func run(
        model: LlamaModel, pairs: [PreferencePair], seqLen: Int, padToken: Int32, batchPairs: Int
    ) throws -> RewardEvaluation {
        var e = RewardEvaluation()
        for start in stride(from: 0, to: pairs.count, by: max(batchPairs, 1)) {
            let batch = Array(pairs[start..<min(start + batchPairs, pairs.count)])
            let r = try RewardObjective.forward(
                batch.flatMap { [$0.chosen, $0.rejected] }, model: model, seqLen: seqLen, padToken: padToken)
            for (i, pair) in batch.enumerated() {
                let margin = Double(r.values[2 * i] - r.values[2 * i + 1])
                let k = pair.rating.rawValue
                e.pairs[k] += 1
                e.correct[k] += margin > 0 ? 1 : 0
                e.margins[k].append(margin)
                e.chosenScores.append(Double(r.values[2 * i]))
                e.rejectedScores.append(Double(r.values[2 * i + 1]))
            }
        }
        return e
    }

    public var accuracy: Double { Double(correct.reduce(0, +)) / Double(max(pairs.reduce(0, +), 1)) }

    public func table() -> String {
        func cell(_ s: String) -> String { s.padding(toLength: 14, withPad: " ", startingAt: 0) }
        var lines = [
            "".padding(toLength: 20, withPad: " ", startingAt: 0)
                + ["Significantly", "Better", "Slightly", "Negligibly /", "Avg"].map(cell).joined()
        ]
        lines.append(
            "".padding(toLength: 20, withPad: " ", startingAt: 0)
                + ["Better", "", "Better", "Unsure", ""].map(cell).joined())
        let accuracies = (0..<4).map {
            pairs[$0] > 0 ? String(format: "%.1f%%", 100 * Double(correct[$0]) / Double(pairs[$0])) : "-"
        }
        lines.append(
            "accuracy".padding(toLength: 20, withPad: " ", startingAt: 0)
                + (accuracies + [String(format: "%.1f%%", 100 * accuracy)]).map(cell).joined())
        lines.append(
            "pairs".padding(toLength: 20, withPad: " ", startingAt: 0)
                + (pairs.map(String.init) + [String(pairs.reduce(0, +))]).map(cell).joined())
        func stats(_ xs: [Double]) -> String {
            guard !xs.isEmpty else { return "-" }
            let mean = xs.reduce(0, +) / Double(xs.count)
            let sd = (xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(xs.count)).squareRoot()
            return String(format: "%.2f±%.2f", mean, sd)
        }
        lines.append(
            "margin r_c−r_r".padding(toLength: 20, withPad: " ", startingAt: 0)
                + (margins.map(stats) + [stats(margins.flatMap { $0 })]).map(cell).joined())
        return lines.joined(separator: "\n")
    }
}

public enum RewardScoring {
    /// The reward of one token sequence (at most max_seq_len tokens).
    public static func score(_ ids: [Int32], model: LlamaModel, padToken: Int32) throws -> Float {
        try RewardObjective.forward([ids], model: model, seqLen: ids.count, padToken: padToken).values[0]
    }
}
