// Data for the fine-tuning stages (Llama 2 §3.1 and §3.2.2): prompt/response pairs packed for supervised
// fine-tuning, and rated preference pairs for reward models. JSON Lines in, with every bad line named.
//
// SFT packing: each example becomes <s> prompt <sep> response </s>; all examples of an epoch, in a seeded
// order, are concatenated into one stream cut into sequences that fill the context exactly (an example may
// straddle two sequences). Only answer tokens (the response and its </s>) are targets; prompt and separator
// positions get the ignore index, so no gradient flows from them.
import Configuration
import Foundation
import Model
import Support
import Tokenizer
import Training

/// Reads JSON Lines of objects with the given string fields; bad lines are reported as `file:line: reason`
/// and skipped, and a file with no good line is an error.
public func readExamples(_ path: String, fields: [String], log: (String) -> Void) throws -> [[String: String]] {
    guard let data = FileManager.default.contents(atPath: path) else { throw TrainingError("\(path): cannot read") }
    var examples: [[String: String]] = []
    var bad = 0
    for line in JSONLines.lines(data) {
        let n = line.number - 1
        guard let object = line.object else {
            log("\(path):\(n + 1): not a JSON object; line skipped")
            bad += 1
            continue
        }
        var example: [String: String] = [:]
        for field in fields {
            guard let value = object[field] as? String else { break }
            example[field] = value
        }
        guard example.count == fields.count else {
            log("\(path):\(n + 1): needs string fields \(fields.joined(separator: ", ")); line skipped")
            bad += 1
            continue
        }
        example["line"] = String(n + 1)
        examples.append(example)
    }
    guard !examples.isEmpty else { throw TrainingError("\(path): no line parses (\(bad) bad); expected JSON objects with \(fields.joined(separator: ", "))") }
    return examples
}

/// The one prompt format of the fine-tuning stages, `<s> prompt <sep> response </s>`: SFT packs it, reward
/// models train and score on it. The separator is a user-defined or control piece of the tokenizer.
public struct SeparatorFormat: Sendable {
    public let tokenizer: Tokenizer
    public let separator: Int32

    public init(tokenizer: Tokenizer, separator text: String) throws {
        self.tokenizer = tokenizer
        let bytes = Array(text.utf8)
        guard let id = tokenizer.model.pieces.firstIndex(where: { $0.bytes == bytes && ($0.kind == .userDefined || $0.kind == .control) }) else {
            throw TrainingError("the tokenizer \(tokenizer.source) has no '\(text)' piece; train one with `llama-train tokenizer train --user-defined-symbols '\(text)'` or set finetune.separator to one of its user-defined or control pieces")
        }
        separator = Int32(id)
    }

    /// `<s> prompt <sep>`: what the model reads before answering (no loss on it).
    public func prompt(_ text: String) -> [Int32] { [tokenizer.bosId] + tokenizer.encode(text) + [separator] }

    /// `response </s>`: the answer tokens.
    public func answer(_ text: String) -> [Int32] { tokenizer.encode(text) + [tokenizer.eosId] }
}

// MARK: - Supervised fine-tuning

/// One example as tokens and which of them are answer tokens.
public struct SFTExample: Sendable {
    public let tokens: [Int32]
    /// answer[i]: token i is predicted with a loss (response tokens and the closing </s>).
    public let answer: [Bool]
}

public struct SFTPacker: BatchSource, Sendable {
    public let examples: [SFTExample]
    public let seqLen: Int
    public let seed: UInt64
    /// Sequences per epoch: the epoch's stream (the same length in any order) cut into seqLen windows.
    public let sequencesPerEpoch: Int

    public init(examples: [SFTExample], seqLen: Int, seed: UInt64) throws {
        self.examples = examples
        self.seqLen = seqLen
        self.seed = seed
        let tokens = examples.reduce(0) { $0 + $1.tokens.count }
        sequencesPerEpoch = (tokens - 1) / seqLen
        guard sequencesPerEpoch > 0 else { throw TrainingError("the fine-tuning data has \(tokens) tokens, fewer than one sequence of \(seqLen + 1)") }
    }

    /// Tokenises prompt/response pairs as <s> prompt <sep> response </s>.
    public static func encode(_ pairs: [(prompt: String, response: String)], format: SeparatorFormat) -> [SFTExample] {
        pairs.map { pair in
            let prompt = format.prompt(pair.prompt)
            let response = format.answer(pair.response)
            return SFTExample(tokens: prompt + response, answer: [Bool](repeating: false, count: prompt.count) + [Bool](repeating: true, count: response.count))
        }
    }

    /// The example order of an epoch: a permutation seeded by (seed, epoch), so resuming is exact.
    public func order(epoch: Int) -> [Int] {
        SplitMix64.permutation(count: examples.count, seed: seed ^ (UInt64(epoch + 1) &* 0xD1B5_4A32_D192_ED03))
    }

    /// The packed stream of an epoch: tokens and answer flags.
    public func stream(epoch: Int) -> (tokens: [Int32], answer: [Bool]) {
        var tokens: [Int32] = [], answer: [Bool] = []
        for i in order(epoch: epoch) {
            tokens += examples[i].tokens
            answer += examples[i].answer
        }
        return (tokens, answer)
    }

    public func batch(_ k: Int, globalBatch: Int, rank: Int, worldSize: Int) throws -> (tokens: [Int32], targets: [Int32]) {
        let perRank = globalBatch / worldSize
        var tokens: [Int32] = [], targets: [Int32] = []
        var cached: (epoch: Int, tokens: [Int32], answer: [Bool])?
        for i in 0..<perRank {
            let g = k * globalBatch + rank * perRank + i
            let epoch = g / sequencesPerEpoch, start = (g % sequencesPerEpoch) * seqLen
            if cached?.epoch != epoch { let s = stream(epoch: epoch); cached = (epoch, s.tokens, s.answer) }
            let s = cached!
            tokens += s.tokens[start..<(start + seqLen)]
            for t in (start + 1)...(start + seqLen) { targets.append(s.answer[t] ? s.tokens[t] : LlamaModel.ignoreIndex) }
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
        case "negligibly better", "unsure", "negligibly better / unsure", "negligibly better/unsure": self = .negligiblyBetter
        default: return nil
        }
    }

    public var label: String {
        ["Significantly Better", "Better", "Slightly Better", "Negligibly Better / Unsure"][rawValue]
    }

    /// m(r) of the ranking loss, Llama 2 Table 27.
    public func margin(_ table: String) throws -> Float {
        switch table {
        case "none": return 0
        case "small": return [1, 2.0 / 3, 1.0 / 3, 0][rawValue]
        case "large": return [3, 2, 1, 0][rawValue]
        default: throw TrainingError("finetune.margin is '\(table)'; use none, small or large (Llama 2, Table 27)")
        }
    }
}

public struct PreferencePair: Sendable {
    public let chosen: [Int32]
    public let rejected: [Int32]
    public let rating: Rating
    public let margin: Float
}

public enum PreferenceData {
    /// Reads {"prompt", "chosen", "rejected", "rating"} lines; an unknown rating is an error naming the line.
    /// Sequences longer than seqLen keep their end (the reward reads the last token); a pair whose chosen and
    /// rejected sequences are identical after that cut teaches nothing (its gradient is zero) and is skipped
    /// with its line named; a file left with no pair is refused.
    public static func load(_ path: String, format: SeparatorFormat, seqLen: Int, margin: String,
                            log: (String) -> Void) throws -> [PreferencePair] {
        var pairs: [PreferencePair] = []
        var cut = 0, identical = 0
        for e in try readExamples(path, fields: ["prompt", "chosen", "rejected", "rating"], log: log) {
            guard let rating = Rating(text: e["rating"]!) else {
                throw TrainingError("\(path):\(e["line"]!): unknown rating '\(e["rating"]!)'; use significantly better, better, slightly better, negligibly better or unsure")
            }
            let prompt = format.prompt(e["prompt"]!)
            let chosen = prompt + format.answer(e["chosen"]!), rejected = prompt + format.answer(e["rejected"]!)
            if chosen.count > seqLen || rejected.count > seqLen { cut += 1 }
            let pair = PreferencePair(chosen: Array(chosen.suffix(seqLen)), rejected: Array(rejected.suffix(seqLen)), rating: rating,
                                      margin: try rating.margin(margin))
            guard pair.chosen != pair.rejected else {
                log("\(path):\(e["line"]!): chosen and rejected are identical\(chosen.count > seqLen ? " in their last \(seqLen) tokens (train.seq_len)" : ""); pair skipped")
                identical += 1
                continue
            }
            pairs.append(pair)
        }
        if cut > 0 { log("\(path): \(cut) pair(s) longer than seq_len \(seqLen) keep their last \(seqLen) tokens") }
        guard !pairs.isEmpty else {
            throw TrainingError("\(path): no pair has a chosen sequence different from its rejected one (\(identical) identical); raise train.seq_len or check the data")
        }
        return pairs
    }

    /// The pair order of an epoch, seeded by (seed, epoch).
    public static func order(count: Int, seed: UInt64, epoch: Int) -> [Int] {
        SplitMix64.permutation(count: count, seed: seed ^ (UInt64(epoch + 1) &* 0x9E37_79B9_7F4A_7C15))
    }
}
