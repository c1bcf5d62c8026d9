// Data for the fine-tuning stages (Llama 2 §3.1 and §3.2.2): prompt/response pairs packed for supervised
// fine-tuning, and rated preference pairs for reward models. JSON Lines in, with every bad line named.
//
// SFT packing: each dialogue is formatted by its template (Dialogue.swift); all examples of an epoch, in a
// seeded order, are concatenated into one stream cut into sequences that fill the context exactly (an example
// may straddle two sequences). Only answer tokens (each assistant turn and its </s>) are targets; prompt,
// system and separator positions get the ignore index, so no gradient flows from them.
import Configuration
import Distributed
import Foundation
import Model
import Support
import Tokenizer
import Training

// MARK: - Supervised fine-tuning

/// One example as tokens and which of them are answer tokens.
public struct SFTExample: Sendable {
    public let tokens: [Int32]
    /// answer[i]: token i is predicted with a loss (response tokens and the closing </s>).
    public let answer: [Bool]
}

public final class SFTPacker: BatchSource, @unchecked Sendable {
    /// The examples, held across the ranks (ShardedExamples) or all here.
    public let examples: ShardedExamples<SFTExample>
    /// Every example's token count, in file order: what the packing is computed from on every rank.
    public let lengths: [Int]
    public let seqLen: Int
    public let seed: UInt64
    /// Sequences per epoch: the epoch's stream (the same length in any order) cut into seqLen windows.
    public let sequencesPerEpoch: Int
    private var cachedStarts: (epoch: Int, order: [Int], starts: [Int])?

    /// All the examples, in this process.
    public convenience init(examples: [SFTExample], seqLen: Int, seed: UInt64) throws {
        try self.init(
            examples: try ShardedExamples(
                local: examples, world: nil, encode: SFTExample.encode, decode: SFTExample.decode),
            lengths: examples.map(\.tokens.count), seqLen: seqLen, seed: seed)
    }

    public init(examples: ShardedExamples<SFTExample>, lengths: [Int], seqLen: Int, seed: UInt64) throws {
        precondition(lengths.count == examples.total, "one length per example")
        self.examples = examples
        self.lengths = lengths
        self.seqLen = seqLen
        self.seed = seed
        let tokens = lengths.reduce(0, +)
        sequencesPerEpoch = (tokens - 1) / seqLen
        guard sequencesPerEpoch > 0 else {
            throw TrainingError("the fine-tuning data has \(tokens) tokens, fewer than one sequence of \(seqLen + 1)")
        }
    }

    /// Tokenises dialogues with a template; the answer flags mark every assistant turn.
    public static func encode(_ dialogues: [Dialogue], template: ChatTemplate) -> [SFTExample] {
        dialogues.map { d in
            let (tokens, answer) = template.encode(d)
            return SFTExample(tokens: tokens, answer: answer)
        }
    }

    /// The example order of an epoch: a permutation seeded by (seed, epoch), so resuming is exact.
    public func order(epoch: Int) -> [Int] {
        SplitMix64.permutation(count: lengths.count, seed: seed ^ (UInt64(epoch + 1) &* 0xD1B5_4A32_D192_ED03))
    }

    /// The epoch's order and where each of its examples starts in the packed stream.
    private func starts(epoch: Int) -> (order: [Int], starts: [Int]) {
        if let c = cachedStarts, c.epoch == epoch { return (c.order, c.starts) }
        let order = order(epoch: epoch)
        var starts = [Int](repeating: 0, count: order.count + 1)
        for (i, e) in order.enumerated() { starts[i + 1] = starts[i] + lengths[e] }
        cachedStarts = (epoch, order, starts)
        return (order, starts)
    }

    /// The packed stream of an epoch: tokens and answer flags (every example, so for a process holding all).
    public func stream(epoch: Int) throws -> (tokens: [Int32], answer: [Bool]) {
        let all = try examples.fetch([order(epoch: epoch)])
        return (all.flatMap(\.tokens), all.flatMap(\.answer))
    }

    /// The positions in order of the examples that window [start, start + seqLen] of an epoch's stream covers.
    private func covering(_ start: Int, starts: [Int]) -> Range<Int> {
        // The example holding position `start`, through the one holding position start + seqLen.
        starts.segment(holding: start)..<(starts.segment(holding: start + seqLen) + 1)
    }

    /// Rank `rank`'s sequences of batch k. Every rank calls it at every step: the examples a rank's windows
    /// cover come from the ranks that hold them (ShardedExamples.fetch), so every rank's windows are computed.
    public func batch(
        _ k: Int, globalBatch: Int, rank: Int, worldSize: Int
    ) throws -> (tokens: [Int32], targets: [Int32]) {
        let perRank = globalBatch / worldSize
        // For every rank, its windows: (epoch, start) and the positions in that epoch's order they cover.
        var windows: [[(epoch: Int, start: Int, covered: Range<Int>)]] = []
        var needs: [[Int]] = []
        for d in 0..<worldSize {
            var mine: [(epoch: Int, start: Int, covered: Range<Int>)] = []
            var wanted: [Int] = []
            for i in 0..<perRank {
                let g = k * globalBatch + d * perRank + i
                let epoch = g / sequencesPerEpoch, start = (g % sequencesPerEpoch) * seqLen
                let (order, starts) = self.starts(epoch: epoch)
                let covered = covering(start, starts: starts)
                mine.append((epoch, start, covered))
                wanted += covered.map { order[$0] }
            }
            windows.append(mine)
            needs.append(wanted)
        }
        let fetched = try examples.fetch(needs)
        var tokens: [Int32] = [], targets: [Int32] = []
        var next = 0
        for (epoch, start, covered) in windows[rank] {
            let starts = self.starts(epoch: epoch).starts
            var windowTokens: [Int32] = [], windowAnswer: [Bool] = []
            for position in covered {
                let e = fetched[next]
                next += 1
                let from = max(start - starts[position], 0)
                let to = min(start + seqLen + 1 - starts[position], e.tokens.count)
                windowTokens += e.tokens[from..<to]
                windowAnswer += e.answer[from..<to]
            }
            tokens += windowTokens[0..<seqLen]
            for t in 1...seqLen { targets.append(windowAnswer[t] ? windowTokens[t] : LlamaModel.ignoreIndex) }
        }
        return (tokens, targets)
    }

    public func position(afterSequences sequences: Int) -> String? {
        String(format: "epochs so far: %.2f", Double(sequences) / Double(sequencesPerEpoch))
    }
}

// MARK: - Reward models

/// The four degrees of preference of Llama 2's annotation (§3.2.1), most decisive first.
public enum Rating: Int, CaseIterable, Sendable {
    case significantlyBetter, better, slightlyBetter, negligiblyBetter

    public init?(text: String) {
        switch text.lowercased().trimmingCharacters(in: .whitespaces) {
        case "significantly better": self = .significantlyBetter
        case "better": self = .better
        case "slightly better": self = .slightlyBetter
        case "negligibly better", "unsure", "negligibly better / unsure", "negligibly better/unsure":
            self = .negligiblyBetter
        default: return nil
        }
    }

    public var label: String {
        ["Significantly Better", "Better", "Slightly Better", "Negligibly Better / Unsure"][rawValue]
    }

    /// m(r) of the ranking loss, Llama 2 Table 27.
    public func margin(_ table: MarginTable) -> Float {
        switch table {
        case .none: 0
        case .small: [1, 2.0 / 3, 1.0 / 3, 0][rawValue]
        case .large: [3, 2, 1, 0][rawValue]
        }
    }

    /// The table as a file or flag spells it.
    public func margin(_ table: String) throws -> Float {
        guard let known = MarginTable(rawValue: table) else {
            let words = ValueKind.alternatives(MarginTable.allCases.map(\.rawValue))
            throw TrainingError("finetune.margin is '\(table)'; use \(words) (Llama 2, Table 27)")
        }
        return margin(known)
    }
}

public struct PreferencePair: Sendable {
    public let chosen: [Int32]
    public let rejected: [Int32]
    public let rating: Rating
    public let margin: Float
    /// Per token, whether it is the assistant's (what DPO's log-probs sum over); the reward model reads only
    /// the last token.
    public let chosenAnswer: [Bool]
    public let rejectedAnswer: [Bool]

    /// Without answer flags, every token after the first counts as the answer's.
    public init(
        chosen: [Int32], rejected: [Int32], rating: Rating, margin: Float, chosenAnswer: [Bool]? = nil,
        rejectedAnswer: [Bool]? = nil
    ) {
        (self.chosen, self.rejected, self.rating, self.margin) = (chosen, rejected, rating, margin)
        self.chosenAnswer = chosenAnswer ?? chosen.indices.map { $0 > 0 }
        self.rejectedAnswer = rejectedAnswer ?? rejected.indices.map { $0 > 0 }
        precondition(self.chosenAnswer.count == chosen.count && self.rejectedAnswer.count == rejected.count)
    }
}

public enum PreferenceData {
    /// Reads preference pairs in any supported format (Dialogue.swift) and formats both dialogues with
    /// `template`. Sequences longer than seqLen keep their end (the reward reads the last token); a pair whose
    /// chosen and rejected sequences are identical after that cut teaches nothing (its gradient is zero) and is
    /// skipped with its line named; a file left with no pair is refused.
    public static func load(
        _ path: String, template: ChatTemplate, seqLen: Int, margin: MarginTable, world: Communicator? = nil,
        log: (String) -> Void
    ) throws -> [PreferencePair] {
        var pairs: [PreferencePair] = []
        var said: [String] = []
        var cut = 0, identical = 0
        for (line, example) in try DialogueData.load(path, preferences: true, world: world, log: log).1 {
            guard case let .preference(chosenDialogue, rejectedDialogue, rating) = example else { continue }
            let (chosen, chosenAnswer) = template.encode(chosenDialogue)
            let (rejected, rejectedAnswer) = template.encode(rejectedDialogue)
            if chosen.count > seqLen || rejected.count > seqLen { cut += 1 }
            let pair = PreferencePair(
                chosen: Array(chosen.suffix(seqLen)), rejected: Array(rejected.suffix(seqLen)), rating: rating,
                margin: rating.margin(margin), chosenAnswer: Array(chosenAnswer.suffix(seqLen)),
                rejectedAnswer: Array(rejectedAnswer.suffix(seqLen)))
            guard pair.chosen != pair.rejected else {
                said.append(
                    "\(path):\(line): chosen and rejected are identical\(chosen.count > seqLen ? " in their last \(seqLen) tokens (train.seq_len)" : ""); pair skipped"
                )
                identical += 1
                continue
            }
            pairs.append(pair)
        }
        // Read across the ranks: rank 0 says every rank's skipped pairs, and the totals decide for all.
        let counts = try DialogueData.sayInFileOrder(
            said, totals: [Double(cut), Double(identical), Double(pairs.count)], world: world, log: log)
        let (allCut, allIdentical, allPairs) = (Int(counts[0]), Int(counts[1]), Int(counts[2]))
        if allCut > 0 {
            log("\(path): \(allCut) pair(s) longer than seq_len \(seqLen) keep their last \(seqLen) tokens")
        }
        guard allPairs > 0 else {
            throw TrainingError(
                "\(path): no pair has a chosen sequence different from its rejected one (\(allIdentical) identical); raise train.seq_len or check the data"
            )
        }
        return pairs
    }

    /// The pair order of an epoch, seeded by (seed, epoch).
    public static func order(count: Int, seed: UInt64, epoch: Int) -> [Int] {
        SplitMix64.permutation(count: count, seed: seed ^ (UInt64(epoch + 1) &* 0x9E37_79B9_7F4A_7C15))
    }
}
