// Reward models (Llama 2 §3.2.2): the language model's trunk with a scalar head read at the last token of
// prompt + response, trained with the binary ranking loss with a margin,
//     L = −log σ(r(x, y_chosen) − r(x, y_rejected) − m(rating)),
// averaged over the pairs of the global batch; and the evaluation of Table 28 (accuracy per rating).

import Configuration
import Distributed
import Foundation
import Model
import Support
import Training

/// −log σ(d) = softplus(−d), computed without overflow.
@inline(__always) func softplus(_ x: Double) -> Double { max(x, 0) + log1p(exp(-abs(x))) }

/// The pair batches of the preference stages (reward models, DPO): global batch k is pairs k·P … (k+1)·P − 1
/// of the epochs' seeded orders, each rank's slice brought from the ranks holding them (one all-to-all), in
/// micro-batches of `microPairs` pairs (chosen and rejected side by side).
public final class PreferenceBatches {
    /// The preference pairs, held across the ranks (ShardedExamples) or all here.
    let pairs: ShardedExamples<PreferencePair>
    let pairsPerBatch: Int
    let microPairs: Int
    let seqLen: Int
    let seed: UInt64
    /// This rank's pairs of the loaded step, and their global indices.
    private(set) var current: [PreferencePair] = []
    private(set) var indices: [Int] = []
    private var cachedOrder: (epoch: Int, order: [Int])?

    init(
        pairs: ShardedExamples<PreferencePair>, pairsPerBatch: Int, microBatchSequences: Int, seqLen: Int,
        seed: UInt64, stage: String
    ) throws {
        guard microBatchSequences >= 2, microBatchSequences % 2 == 0 else {
            throw TrainingError(
                "train.micro_batch is \(microBatchSequences) sequences; \(stage) needs an even number (chosen and rejected of each pair)"
            )
        }
        (self.pairs, self.pairsPerBatch, microPairs) = (pairs, pairsPerBatch, microBatchSequences / 2)
        (self.seqLen, self.seed) = (seqLen, seed)
    }

    var tokensPerStep: Int { pairsPerBatch * 2 * seqLen }
    var description: String {
        "\(pairsPerBatch) preference pairs (\(2 * pairsPerBatch) sequences of up to \(seqLen) tokens)"
    }

    func accumulation(worldSize: Int, file: String?) throws -> Int {
        guard pairsPerBatch % (microPairs * worldSize) == 0 else {
            throw ConfigError(
                file: file, field: "finetune.pairs_per_batch",
                message:
                    "\(pairsPerBatch) pairs do not split into micro-batches of \(microPairs) pairs on \(worldSize) rank(s)"
            )
        }
        return pairsPerBatch / (microPairs * worldSize)
    }

    /// Every rank calls it at every step; returns the local count of pairs.
    func load(step k: Int, rank: Int, worldSize: Int) throws -> Double {
        let perRank = pairsPerBatch / worldSize, count = pairs.total
        let needs = (0..<worldSize).map { d in
            (0..<perRank).map { i in
                let g = k * pairsPerBatch + d * perRank + i
                let epoch = g / count
                if cachedOrder?.epoch != epoch {
                    cachedOrder = (epoch, PreferenceData.order(count: count, seed: seed, epoch: epoch))
                }
                return cachedOrder!.order[g % count]
            }
        }
        indices = needs[rank]
        current = try pairs.fetch(needs)
        return Double(perRank)
    }

    /// Micro-step m's pairs and their global indices.
    func micro(_ m: Int) -> (pairs: [PreferencePair], indices: [Int]) {
        let range = (m * microPairs)..<((m + 1) * microPairs)
        return (Array(current[range]), Array(indices[range]))
    }
}

public final class RewardObjective: TrainingObjective {
    public let name = "reward model"
    let batches: PreferenceBatches
    let padToken: Int32
    /// This rank's pairs of the loaded step.
    var currentPairs: [PreferencePair] { batches.current }

    /// All the pairs, in this process.
    public convenience init(
        pairs: [PreferencePair], pairsPerBatch: Int, microBatchSequences: Int, seqLen: Int, seed: UInt64,
        padToken: Int32
    ) throws {
        try self.init(
            pairs: try ShardedExamples(
                local: pairs, world: nil, encode: PreferencePair.encode, decode: PreferencePair.decode),
            pairsPerBatch: pairsPerBatch, microBatchSequences: microBatchSequences, seqLen: seqLen, seed: seed,
            padToken: padToken)
    }

    public init(
        pairs: ShardedExamples<PreferencePair>, pairsPerBatch: Int, microBatchSequences: Int, seqLen: Int,
        seed: UInt64, padToken: Int32
    ) throws {
        batches = try PreferenceBatches(
            pairs: pairs, pairsPerBatch: pairsPerBatch, microBatchSequences: microBatchSequences, seqLen: seqLen,
            seed: seed, stage: "a reward model")
        self.padToken = padToken
    }

    public var tokensPerStep: Int { batches.tokensPerStep }
    public var batchDescription: String { batches.description }

    public func accumulation(worldSize: Int, file: String?) throws -> Int {
        try batches.accumulation(worldSize: worldSize, file: file)
    }

    public func load(step k: Int, rank: Int, worldSize: Int) throws -> Double {
        try batches.load(step: k, rank: rank, worldSize: worldSize)
    }

    public func microStep(_ m: Int, models: ModelSet, scale: Float, gradientsReady: ((Int) -> Void)?) throws -> Double {
        let model = models.primary
        let batch = batches.micro(m).pairs
        let rewards = try Self.forward(
            batch.flatMap { [$0.chosen, $0.rejected] }, model: model, seqLen: batches.seqLen, padToken: padToken)
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

    /// Every rank scores its share of the pairs' responses (RewardScoring.scoreAll: batches by length) and
    /// every rank gets the same evaluation, equal for any rank count. Every rank must call it.
    public static func run(
        model: LlamaModel, pairs: [PreferencePair], padToken: Int32, batchPairs: Int, world: Communicator
    ) throws -> RewardEvaluation {
        let scores = try RewardScoring.scoreAll(
            pairs.flatMap { [$0.chosen, $0.rejected] }, model: model, padToken: padToken,
            batchSequences: 2 * max(batchPairs, 1), world: world)
        var e = RewardEvaluation()
        for (i, pair) in pairs.enumerated() {
            let (chosen, rejected) = (scores[2 * i], scores[2 * i + 1])
            let margin = Double(chosen - rejected)
            let k = pair.rating.rawValue
            e.pairs[k] += 1
            e.correct[k] += margin > 0 ? 1 : 0
            e.margins[k].append(margin)
            e.chosenScores.append(Double(chosen))
            e.rejectedScores.append(Double(rejected))
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

    /// Padding granularity of a length batch: fewer arena shapes, at most 15 pad tokens per sequence.
    static let lengthQuantum = 16

    /// A batch's padded length: its longest sequence rounded up to lengthQuantum, at most `maxLength`.
    static func paddedLength(longest: Int, maxLength: Int) -> Int {
        min(max((longest + lengthQuantum - 1) / lengthQuantum * lengthQuantum, 1), maxLength)
    }

    /// The batches `scoreAll` runs: sequence indices, longest first, `perBatch` at a time, and each batch's
    /// padded length (its longest, rounded up to lengthQuantum, at most `maxLength`). They depend on the
    /// lengths alone, never on the rank count.
    public static func lengthBatches(lengths: [Int], perBatch: Int, maxLength: Int) -> [(indices: [Int], length: Int)] {
        let order = lengths.indices.sorted { lengths[$0] != lengths[$1] ? lengths[$0] > lengths[$1] : $0 < $1 }
        return stride(from: 0, to: order.count, by: max(perBatch, 1)).map { start in
            let indices = Array(order[start..<min(start + max(perBatch, 1), order.count)])
            return (indices, paddedLength(longest: indices.map { lengths[$0] }.max() ?? 1, maxLength: maxLength))
        }
    }

    /// The reward of every sequence, on every rank. The sequences are sorted by length and cut into batches
    /// of `batchSequences`, each padded only to its own longest (not to seq_len: Llama 2's pairs average ~800
    /// of 4096 tokens); rank r runs batches r, r + N, …, and one allreduce brings the scores to every rank.
    /// A batch's shape and contents do not depend on N, so neither does any score. Ranks with a batch fewer
    /// run a one-token forward in its place, since a model sharded by units gathers its weights collectively.
    /// Every rank must call it.
    public static func scoreAll(
        _ sequences: [[Int32]], model: LlamaModel, padToken: Int32, batchSequences: Int, world: Communicator
    ) throws -> [Float] {
        let batches = lengthBatches(
            lengths: sequences.map(\.count), perBatch: batchSequences, maxLength: model.config.maxSeqLen)
        var scores = [Double](repeating: 0, count: sequences.count)
        let rounds = (batches.count + world.size - 1) / world.size
        for round in 0..<rounds {
            let b = round * world.size + world.rank
            guard b < batches.count else {
                _ = try RewardObjective.forward([[padToken]], model: model, seqLen: 1, padToken: padToken)
                continue
            }
            let (indices, length) = batches[b]
            let r = try RewardObjective.forward(
                indices.map { sequences[$0] }, model: model, seqLen: length, padToken: padToken)
            for (i, index) in indices.enumerated() { scores[index] = Double(r.values[i]) }
        }
        // Each score is on one rank and zero on the others: the sum is exact.
        try scores.withUnsafeMutableBufferPointer { try world.allreduceSum($0.baseAddress!, count: $0.count) }
        return scores.map { Float($0) }
    }
}
