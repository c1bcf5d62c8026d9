// Data for the fine-tuning stages (Llama 2 §3.1 and §3.2.2): prompt/response pairs packed for supervised
// fine-tuning, and rated preference pairs for reward models. JSON Lines in, with every bad line named.
//
// SFT packing: each example becomes <s> prompt <sep> response </s>; all examples of an epoch, in a seeded
// order, are concatenated into one stream cut into sequences that fill the context exactly (an example may
// straddle two sequences). Only answer tokens (the response and its </s>) are targets; prompt and separator
// positions get the ignore index, so no gradient flows from them.
import Foundation
import Model
import Tokenizer

public struct FineTuneSettings: Codable, Equatable, Sendable {
    /// JSON Lines: {"prompt", "response"} for SFT; {"prompt", "chosen", "rejected", "rating"} for reward models.
    public var data: String
    /// Held-out examples evaluated at the end (reward models: accuracy per rating).
    public var evalData: String?
    /// The starting model: a Hugging Face directory (config.json + model.safetensors) or one of our checkpoints.
    public var initFrom: String?
    public var epochs: Int = 2
    /// The separator piece between prompt and answer: a user-defined or control piece of the tokenizer.
    public var separator = "<sep>"
    /// Reward models: the margin m(rating) of the ranking loss (Llama 2 Table 27): none, small or large.
    public var margin = "small"
    /// Reward models: preference pairs per global batch (Llama 2: 512; 1024 sequences).
    public var pairsPerBatch = 512
    /// Reward models: the fraction of steps spent warming up (Llama 2: 3%).
    public var warmupFraction = 0.03

    enum CodingKeys: String, CodingKey, CaseIterable {
        case data, evalData = "eval_data", initFrom = "init_from", epochs, separator, margin
        case pairsPerBatch = "pairs_per_batch", warmupFraction = "warmup_fraction"
    }

    public init(data: String) { self.data = data }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        data = try c.decode(String.self, forKey: .data)
        evalData = try c.decodeIfPresent(String.self, forKey: .evalData)
        initFrom = try c.decodeIfPresent(String.self, forKey: .initFrom)
        epochs = try c.decodeIfPresent(Int.self, forKey: .epochs) ?? 2
        separator = try c.decodeIfPresent(String.self, forKey: .separator) ?? "<sep>"
        margin = try c.decodeIfPresent(String.self, forKey: .margin) ?? "small"
        pairsPerBatch = try c.decodeIfPresent(Int.self, forKey: .pairsPerBatch) ?? 512
        warmupFraction = try c.decodeIfPresent(Double.self, forKey: .warmupFraction) ?? 0.03
    }
}

/// Reads JSON Lines of objects with the given string fields; bad lines are reported as `file:line: reason`
/// and skipped, and a file with no good line is an error.
public func readExamples(_ path: String, fields: [String], log: (String) -> Void) throws -> [[String: String]] {
    guard let data = FileManager.default.contents(atPath: path) else { throw TrainingError("\(path): cannot read") }
    var examples: [[String: String]] = []
    var bad = 0
    for (n, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
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

/// The id of a special piece the fine-tuning format needs, or an error saying how to get one.
public func specialPiece(_ text: String, in tokenizer: Tokenizer) throws -> Int32 {
    let bytes = Array(text.utf8)
    guard let id = tokenizer.model.pieces.firstIndex(where: { $0.bytes == bytes && ($0.kind == .userDefined || $0.kind == .control) }) else {
        throw TrainingError("the tokenizer \(tokenizer.source) has no '\(text)' piece; train one with `llama-train tokenizer train --user-defined-symbols '\(text)'` or set finetune.separator to one of its user-defined or control pieces")
    }
    return Int32(id)
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
    public static func encode(_ pairs: [(prompt: String, response: String)], tokenizer: Tokenizer, separator: Int32) -> [SFTExample] {
        pairs.map { pair in
            let prompt = [tokenizer.bosId] + tokenizer.encode(pair.prompt) + [separator]
            let response = tokenizer.encode(pair.response) + [tokenizer.eosId]
            return SFTExample(tokens: prompt + response, answer: [Bool](repeating: false, count: prompt.count) + [Bool](repeating: true, count: response.count))
        }
    }

    /// The example order of an epoch: a permutation seeded by (seed, epoch), so resuming is exact.
    public func order(epoch: Int) -> [Int] {
        var order = Array(examples.indices)
        var rng = SplitMix64(seed: seed ^ (UInt64(epoch + 1) &* 0xD1B5_4A32_D192_ED03))
        for j in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(j, Int(rng.next() % UInt64(j + 1))) }
        return order
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
    public static func load(_ path: String, tokenizer: Tokenizer, separator: Int32, seqLen: Int, margin: String,
                            log: (String) -> Void) throws -> [PreferencePair] {
        try readExamples(path, fields: ["prompt", "chosen", "rejected", "rating"], log: log).map { e in
            guard let rating = Rating(text: e["rating"]!) else {
                throw TrainingError("\(path):\(e["line"]!): unknown rating '\(e["rating"]!)'; use significantly better, better, slightly better, negligibly better or unsure")
            }
            func sequence(_ response: String) -> [Int32] {
                let ids = [tokenizer.bosId] + tokenizer.encode(e["prompt"]!) + [separator] + tokenizer.encode(response) + [tokenizer.eosId]
                return Array(ids.suffix(seqLen))  // keep the end: the reward reads the last token
            }
            return PreferencePair(chosen: sequence(e["chosen"]!), rejected: sequence(e["rejected"]!), rating: rating,
                                  margin: try rating.margin(margin))
        }
    }

    /// The pair order of an epoch, seeded by (seed, epoch).
    public static func order(count: Int, seed: UInt64, epoch: Int) -> [Int] {
        var order = Array(0..<count)
        var rng = SplitMix64(seed: seed ^ (UInt64(epoch + 1) &* 0x9E37_79B9_7F4A_7C15))
        for j in stride(from: count - 1, to: 0, by: -1) { order.swapAt(j, Int(rng.next() % UInt64(j + 1))) }
        return order
    }
}
