// Direct preference optimisation (Rafailov et al. 2023) on the reward models' preference data:
//     L = −log σ(β [(log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r))]),
// log π(y) summed over the response's tokens (the template's answer tokens), averaged over the pairs of the
// global batch. The reference is the policy's own starting point, so its log-probs are computed once, in one
// distributed pass before the first step (DPOObjective.begin), and kept in the checkpoint directory for a
// resumed run: no reference model stays in memory.
// What this is not: the data formats (Dialogue.swift, FineTuneData.swift) or the loop (Training).

import Configuration
import Distributed
import Foundation
import Model
import Support
import Training

/// Summed log-probabilities of sequences' answer tokens under a training model's language head.
public enum SequenceLogProbs {
    /// One forward over `sequences` (tokens with their answer flags, each at most seqLen), padded after their
    /// ends (causal attention never lets a sequence see its padding); returns each one's Σ log p(answer token
    /// | what precedes it). The targets stay in the model for a backward.
    static func forward(
        _ sequences: [(tokens: [Int32], answer: [Bool])], model: LlamaModel, seqLen: Int, padToken: Int32
    ) throws -> [Double] {
        var tokens: [Int32] = [], targets: [Int32] = []
        tokens.reserveCapacity(sequences.count * seqLen)
        targets.reserveCapacity(sequences.count * seqLen)
        for s in sequences {
            tokens += s.tokens + [Int32](repeating: padToken, count: seqLen - s.tokens.count)
            // Position t predicts token t + 1: counted where that token is the answer's.
            for t in 0..<seqLen {
                targets.append(t + 1 < s.tokens.count && s.answer[t + 1] ? s.tokens[t + 1] : LlamaModel.ignoreIndex)
            }
        }
        _ = try model.forward(tokens: tokens, targets: targets, batch: sequences.count, seqLen: seqLen)
        let losses = model.positionLosses
        return sequences.indices.map { b in
            var sum = 0.0
            for t in 0..<seqLen { sum += Double(losses[b * seqLen + t]) }
            return -sum
        }
    }

    /// The batches `all` runs: `perBatch` consecutive sequences, each batch padded as reward scoring pads
    /// (RewardScoring.paddedLength). They depend on the sequences alone, never on the rank count, so neither
    /// does any value.
    static func batches(lengths: [Int], perBatch: Int, maxLength: Int) -> [(range: Range<Int>, length: Int)] {
        let n = max(perBatch, 1)
        return stride(from: 0, to: lengths.count, by: n).map { start in
            let range = start..<min(start + n, lengths.count)
            return (range, RewardScoring.paddedLength(longest: lengths[range].max() ?? 1, maxLength: maxLength))
        }
    }

    /// Every sequence's summed answer log-prob, on every rank: batch j on rank j mod N, one allreduce (each value
    /// is on one rank and zero elsewhere, so the sum is exact). Each round, `fetch(needs)` is given every rank's
    /// sequence indices (needs[d] for rank d; every rank calls it alike, so it may be a collective that brings
    /// them from the ranks holding them) and returns this rank's sequences. Ranks with a batch fewer run a
    /// one-token forward in its place, since a model sharded by units gathers its weights collectively.
    /// Every rank must call it.
    static func all(
        lengths: [Int], model: LlamaModel, padToken: Int32, batchSequences: Int, world: Communicator,
        fetch: ([[Int]]) throws -> [(tokens: [Int32], answer: [Bool])]
    ) throws -> [Double] {
        let plan = batches(lengths: lengths, perBatch: batchSequences, maxLength: model.config.maxSeqLen)
        var values = [Double](repeating: 0, count: lengths.count)
        let rounds = (plan.count + world.size - 1) / world.size
        for round in 0..<rounds {
            let needs = (0..<world.size).map { d -> [Int] in
                let b = round * world.size + d
                return b < plan.count ? Array(plan[b].range) : []
            }
            let mine = try fetch(needs)
            let b = round * world.size + world.rank
            guard b < plan.count else {
                _ = try model.forward(tokens: [padToken], targets: [LlamaModel.ignoreIndex], batch: 1, seqLen: 1)
                continue
            }
            let sums = try forward(mine, model: model, seqLen: plan[b].length, padToken: padToken)
            for (i, index) in plan[b].range.enumerated() { values[index] = sums[i] }
        }
        try values.withUnsafeMutableBufferPointer { try world.allreduceSum($0.baseAddress!, count: $0.count) }
        return values
    }
}

extension PreferencePair {
    /// Chosen then rejected, with their answer flags.
    var sequences: [(tokens: [Int32], answer: [Bool])] { [(chosen, chosenAnswer), (rejected, rejectedAnswer)] }
}

public final class DPOObjective: TrainingObjective {
    public let name = "DPO"
    let batches: PreferenceBatches
    /// Held-out pairs (every rank holds them all), evaluated at the end against their own reference log-probs.
    let evalPairs: [PreferencePair]
    let padToken: Int32
    let beta: Double
    /// Reference log-probs, chosen then rejected of pair g at 2g and 2g + 1; filled by begin.
    public private(set) var reference: [Double] = []
    public private(set) var evalReference: [Double] = []
    var pairs: ShardedExamples<PreferencePair> { batches.pairs }
    var microPairs: Int { batches.microPairs }

    public init(
        pairs: ShardedExamples<PreferencePair>, evalPairs: [PreferencePair] = [], pairsPerBatch: Int,
        microBatchSequences: Int, seqLen: Int, seed: UInt64, padToken: Int32, beta: Double
    ) throws {
        batches = try PreferenceBatches(
            pairs: pairs, pairsPerBatch: pairsPerBatch, microBatchSequences: microBatchSequences, seqLen: seqLen,
            seed: seed, stage: "DPO")
        (self.evalPairs, self.padToken, self.beta) = (evalPairs, padToken, beta)
    }

    public var tokensPerStep: Int { batches.tokensPerStep }
    public var batchDescription: String { batches.description }

    public func accumulation(worldSize: Int, file: String?) throws -> Int {
        try batches.accumulation(worldSize: worldSize, file: file)
    }

    public func load(step k: Int, rank: Int, worldSize: Int) throws -> Double {
        try batches.load(step: k, rank: rank, worldSize: worldSize)
    }

    /// The name of the reference log-probs' file in the checkpoint directory.
    public static let referenceFileName = "dpo-reference-logprobs.bin"

    /// The reference log-probs of every training and held-out pair: computed with the model as it starts (the
    /// reference itself) on a fresh run, and written to the checkpoint directory; read back from there when
    /// the run resumes, since the model has moved on.
    public func begin(models: ModelSet, world: Communicator, startStep: Int, checkpointDirectory: String?) throws {
        let model = models.primary
        // Every sequence's length on every rank (the batches' arithmetic): chosen of pair g at 2g, rejected at 2g + 1.
        var lengths = [Double](repeating: 0, count: 2 * pairs.total)
        for (g, p) in pairs.local {
            (lengths[2 * g], lengths[2 * g + 1]) = (Double(p.chosen.count), Double(p.rejected.count))
        }
        try lengths.withUnsafeMutableBufferPointer { try world.allreduceSum($0.baseAddress!, count: $0.count) }
        let fingerprint = ReferenceFingerprint(
            pairs: pairs.total, evalPairs: evalPairs.count,
            tokens: lengths.reduce(0, +) + Double(evalPairs.reduce(0) { $0 + $1.chosen.count + $1.rejected.count }))
        let file = checkpointDirectory.map { $0 + "/" + Self.referenceFileName }
        if startStep > 0, let file {
            (reference, evalReference) = try fingerprint.read(file)
            return
        }
        // Pair g's two sequences are 2g and 2g + 1; a round brings each rank its batch's pairs (one all-to-all).
        reference = try SequenceLogProbs.all(
            lengths: lengths.map { Int($0) }, model: model, padToken: padToken, batchSequences: 2 * microPairs,
            world: world,
            fetch: { needs in
                let pairIndices = needs.map { ids in ids.filter { $0 % 2 == 0 }.map { $0 / 2 } }
                return try self.pairs.fetch(pairIndices).flatMap(\.sequences)
            })
        evalReference = try Self.logProbs(
            evalPairs, model: model, padToken: padToken, batchPairs: microPairs, world: world)
        if world.isRoot, let file { try fingerprint.write(reference: reference, eval: evalReference, to: file) }
    }

    /// Summed answer log-probs of pairs every rank holds, chosen then rejected, on every rank.
    static func logProbs(
        _ pairs: [PreferencePair], model: LlamaModel, padToken: Int32, batchPairs: Int, world: Communicator
    ) throws -> [Double] {
        let sequences = pairs.flatMap(\.sequences)
        return try SequenceLogProbs.all(
            lengths: sequences.map(\.tokens.count), model: model, padToken: padToken,
            batchSequences: 2 * max(batchPairs, 1), world: world,
            fetch: { needs in needs[world.rank].map { sequences[$0] } })
    }

    public func microStep(_ m: Int, models: ModelSet, scale: Float, gradientsReady: ((Int) -> Void)?) throws -> Double {
        let model = models.primary, seqLen = batches.seqLen
        let (batch, indices) = batches.micro(m)
        let logProbs = try SequenceLogProbs.forward(
            batch.flatMap(\.sequences), model: model, seqLen: seqLen, padToken: padToken)
        var loss = 0.0
        var weights = [Float](repeating: 0, count: 2 * microPairs * seqLen)
        for (i, g) in indices.enumerated() {
            let d =
                beta
                * ((logProbs[2 * i] - reference[2 * g]) - (logProbs[2 * i + 1] - reference[2 * g + 1]))
            loss += softplus(-d)
            // ∂L/∂log π(y_c) = −β σ(−d), and log π(y) = −Σ cross-entropy over its answer tokens; the rejected
            // sequence's weight is the opposite. Positions not counted are zeroed by the backward.
            let w = Float(beta / (1 + exp(d))) * scale
            weights[(2 * i * seqLen)..<((2 * i + 1) * seqLen)].withUnsafeMutableBufferPointer {
                $0.update(repeating: w)
            }
            weights[((2 * i + 1) * seqLen)..<((2 * i + 2) * seqLen)].withUnsafeMutableBufferPointer {
                $0.update(repeating: -w)
            }
        }
        try model.backward(heads: [.lm: .weightedCrossEntropy(weights: weights)], gradientsReady: gradientsReady)
        return loss
    }

    /// Held-out accuracy per rating and margins, as `reward` reports them: the implicit reward of a response
    /// is β (log π(y) − log π_ref(y)), and a pair is right when its chosen response's is the higher.
    /// Every rank must call it; every rank gets the same evaluation.
    public func evaluate(model: LlamaModel, world: Communicator) throws -> RewardEvaluation {
        let now = try Self.logProbs(evalPairs, model: model, padToken: padToken, batchPairs: microPairs, world: world)
        var e = RewardEvaluation()
        for (i, pair) in evalPairs.enumerated() {
            let chosen = beta * (now[2 * i] - evalReference[2 * i])
            let rejected = beta * (now[2 * i + 1] - evalReference[2 * i + 1])
            let k = pair.rating.rawValue
            e.pairs[k] += 1
            e.correct[k] += chosen > rejected ? 1 : 0
            e.margins[k].append(chosen - rejected)
            e.chosenScores.append(chosen)
            e.rejectedScores.append(rejected)
        }
        return e
    }
}

/// What the reference log-probs' file must match to be this run's: the pair counts and their token total.
struct ReferenceFingerprint {
    let pairs: Int
    let evalPairs: Int
    let tokens: Double
    static let magic = Array("LMDPOREF".utf8)

    func write(reference: [Double], eval: [Double], to path: String) throws {
        var data = Data(Self.magic)
        for word in [UInt64(pairs), UInt64(evalPairs), tokens.bitPattern] + (reference + eval).map(\.bitPattern) {
            withUnsafeBytes(of: word.littleEndian) { data.append(contentsOf: $0) }
        }
        try AtomicFile.write(data, to: path)
    }

    func read(_ path: String) throws -> (reference: [Double], eval: [Double]) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FileError(
                path: path,
                message:
                    "is missing: a resumed DPO run reads the reference log-probs its first start computed from the initial policy; restore the file, or start afresh with --resume none"
            )
        }
        let bytes = [UInt8](data)
        let words = (bytes.count - Self.magic.count) / 8
        func word(_ i: Int) -> UInt64 {
            (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[Self.magic.count + 8 * i + $1]) << (8 * $1) }
        }
        guard bytes.starts(with: Self.magic), words >= 3, (bytes.count - Self.magic.count) % 8 == 0,
            Int(word(0)) == pairs, Int(word(1)) == evalPairs, word(2) == tokens.bitPattern,
            words == 3 + 2 * (pairs + evalPairs)
        else {
            throw FileError(
                path: path,
                message:
                    "does not hold the reference log-probs of this run's \(pairs) pairs and \(evalPairs) held-out pairs (the data changed, or the file is damaged); start afresh with --resume none"
            )
        }
        let values = (3..<words).map { Double(bitPattern: word($0)) }
        return (Array(values[0..<(2 * pairs)]), Array(values[(2 * pairs)...]))
    }
}
