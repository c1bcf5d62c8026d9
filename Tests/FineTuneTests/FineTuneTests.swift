// The fine-tuning stages in one process: SFT packing and its answer-only loss, the reward model's margin
// tables and its gradient by finite differences.

import Configuration
import Distributed
import Foundation
import Inference
import Model
import Support
import TestSupport
import Testing
import Tokenizer
import Training

@testable import FineTune

/// A small tokenizer with a <sep> piece, trained here.
func fineTuneTokenizer() throws -> Tokenizer {
    var options = BPETrainerOptions()
    options.vocabSize = 300
    options.userDefinedSymbols = ["<sep>"]
    let text: [Substring] = [
        "what is the capital of france", "paris is the capital", "repeat after me hello world",
        "the cat sat on the mat", "answer the question please", "numbers like 12 and 345",
    ]
    return try Tokenizer(model: BPETrainer.train(lines: text, options: options))
}

@Suite struct SFTTests {
    static let pairs: [(prompt: String, response: String)] = [
        ("what is the capital of france", "paris"), ("repeat after me", "hello world"), ("the cat", "sat on the mat"),
        ("answer the question", "12 and 345"), ("please", "the capital is paris"),
    ]

    static func dialogues() throws -> [Dialogue] {
        try pairs.map { try Dialogue([Turn(.user, $0.prompt), Turn(.assistant, $0.response)]) }
    }

    /// No token lost or duplicated: each epoch's stream is every example once, in that epoch's order; the
    /// sequences tile the stream; the separator closes every prompt; only answer positions are targets.
    @Test func packingKeepsEveryTokenOnce() throws {
        let tokenizer = try fineTuneTokenizer()
        let template = try ChatTemplate(.separator, tokenizer: tokenizer, separator: "<sep>")
        let sep = template.separator!
        let examples = SFTPacker.encode(try Self.dialogues(), template: template)
        for (e, pair) in zip(examples, Self.pairs) {
            let prompt = [tokenizer.bosId] + tokenizer.encode(pair.prompt) + [sep]
            #expect(Array(e.tokens.prefix(prompt.count)) == prompt && e.tokens.last == tokenizer.eosId)
            #expect(
                e.answer == [Bool](repeating: false, count: prompt.count)
                    + [Bool](repeating: true, count: e.tokens.count - prompt.count))
        }
        let packer = try SFTPacker(examples: examples, seqLen: 8, seed: 4)
        for epoch in 0..<2 {
            let (stream, answer) = try packer.stream(epoch: epoch)
            #expect(stream == packer.order(epoch: epoch).flatMap { examples[$0].tokens })
            #expect(packer.order(epoch: epoch).sorted() == Array(examples.indices))
            let (tokens, targets) = try packer.batch(
                epoch, globalBatch: packer.sequencesPerEpoch, rank: 0, worldSize: 1)
            #expect(tokens == Array(stream.prefix(packer.sequencesPerEpoch * 8)))
            for (i, target) in targets.enumerated() {
                #expect(target == (answer[i + 1] ? stream[i + 1] : LlamaModel.ignoreIndex), "position \(i)")
            }
        }
        #expect(packer.order(epoch: 0) != packer.order(epoch: 1), "each epoch has its own order")
    }

    /// Gradients from prompt tokens are exactly zero, and the loss is the mean over answer tokens only.
    @Test func onlyAnswerTokensCarryLossAndGradient() throws {
        let tokenizer = try fineTuneTokenizer()
        let examples = SFTPacker.encode(
            try Self.dialogues(), template: try ChatTemplate(.separator, tokenizer: tokenizer, separator: "<sep>"))
        let packer = try SFTPacker(examples: examples, seqLen: 16, seed: 1)
        let (tokens, targets) = try packer.batch(0, globalBatch: 2, rank: 0, worldSize: 1)
        let model = try LlamaModel(
            config: LlamaConfig(
                dim: 16, nLayers: 1, nHeads: 2, vocabSize: tokenizer.vocabSize, ffnHiddenSize: 32, maxSeqLen: 16))
        model.initialize(seed: 2, std: 0.2)
        let result = try model.forward(tokens: tokens, targets: targets, batch: 2, seqLen: 16)
        let V = tokenizer.vocabSize
        let logits = Array(model.logits)
        var expected = 0.0, count = 0
        for (i, t) in targets.enumerated() where t != LlamaModel.ignoreIndex {
            let row = logits[(i * V)..<((i + 1) * V)].map(Double.init)
            let m = row.max()!
            expected += m + log(row.map { exp($0 - m) }.reduce(0, +)) - row[Int(t)]
            count += 1
        }
        #expect(result.targetCount == count && count > 0 && count < targets.count)
        #expect(abs(result.meanLoss - expected / Double(count)) < 1e-4)
        model.gradients.zero()
        try model.backward(lossScale: 1 / Float(count))
        let dlogits = model.logits  // the backward leaves d loss / d logits in the logits buffer
        for (i, t) in targets.enumerated() where t == LlamaModel.ignoreIndex {
            #expect(dlogits[(i * V)..<((i + 1) * V)].allSatisfy { $0 == 0 }, "prompt position \(i) passes gradient")
        }
    }
}

@Suite struct RewardTests {
    @Test func marginTables() throws {
        #expect(try Rating.allCases.map { try $0.margin("none") } == [0, 0, 0, 0])
        #expect(try Rating.allCases.map { try $0.margin("small") } == [1, 2.0 / 3, 1.0 / 3, 0])
        #expect(try Rating.allCases.map { try $0.margin("large") } == [3, 2, 1, 0])
        #expect(
            Rating(text: "unsure") == .negligiblyBetter && Rating(text: "Significantly Better") == .significantlyBetter)
        #expect(Rating(text: "much better") == nil)
        #expect(throws: TrainingError.self) { try Rating.better.margin("huge") }
    }

    /// Pairs cut to seq_len keep their end; a pair whose chosen and rejected sequences become identical
    /// (zero gradient for the whole run) is skipped and named, and a file of only such pairs is refused.
    @Test func pairsIdenticalAfterTheCutAreSkippedAndNamed() throws {
        let format = try ChatTemplate(.separator, tokenizer: try fineTuneTokenizer(), separator: "<sep>")
        let path = NSTemporaryDirectory() + "prefs-\(UUID().uuidString).jsonl"
        let long = String(repeating: "the cat sat on the mat ", count: 6)
        let lines = [
            #"{"prompt": "please", "chosen": "paris \#(long)", "rejected": "hello \#(long)", "rating": "better"}"#,
            #"{"prompt": "please", "chosen": "paris", "rejected": "hello world", "rating": "better"}"#,
        ]
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        var messages: [String] = []
        let pairs = try PreferenceData.load(
            path, template: format, seqLen: 12, margin: .small, log: { messages.append($0) })
        #expect(pairs.count == 1 && pairs[0].chosen != pairs[0].rejected)
        #expect(messages.contains { $0.contains("\(path):1") && $0.contains("identical") }, "\(messages)")
        try lines[0].write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try PreferenceData.load(path, template: format, seqLen: 12, margin: .small, log: { _ in }) } throws: {
            "\($0)".contains("no pair")
        }
    }

    /// The ranking loss through the scalar head and the whole trunk, against finite differences.
    @Test func rankingLossGradientMatchesFiniteDifferences() throws {
        let config = LlamaConfig(
            dim: 12, nLayers: 1, nHeads: 3, nKVHeads: 1, vocabSize: 20, ffnHiddenSize: 16, maxSeqLen: 6)
        var reward = config
        reward.heads = [.score]
        let model = try LlamaModel(config: reward)
        model.initialize(seed: 6, std: 0.4)
        #expect(
            model.layout.head(.score)?.name == "score.weight" && model.layout.head(.score)?.shape == [1, 12]
                && model.layout.heads.count == 1)
        let pairs = [
            PreferencePair(chosen: [1, 4, 5, 9], rejected: [1, 4, 7], rating: .better, margin: 2.0 / 3),
            PreferencePair(
                chosen: [1, 3, 3, 3, 8, 2], rejected: [1, 2, 6, 11, 2], rating: .negligiblyBetter, margin: 0),
        ]
        let objective = try RewardObjective(
            pairs: pairs, pairsPerBatch: 2, microBatchSequences: 4, seqLen: 6, seed: 1, padToken: 2)
        _ = try objective.load(step: 0, rank: 0, worldSize: 1)
        model.gradients.zero()
        _ = try objective.microStep(0, model: model, scale: 0.5, gradientsReady: nil)
        func loss() -> Double {
            let batch = objective.currentPairs
            let r = try! RewardObjective.forward(
                batch.flatMap { [$0.chosen, $0.rejected] }, model: model, seqLen: 6, padToken: 2)
            return zip(batch.indices, batch).reduce(0.0) {
                $0 + softplus(-Double(r.values[2 * $1.0] - r.values[2 * $1.0 + 1] - $1.1.margin))
            } * 0.5
        }
        for spec in model.layout.tensors {
            expectTensorGradient(
                spec.name, values: model.parameters.slice(spec.offset, spec.count),
                gradient: UnsafeBufferPointer(model.gradients.slice(spec.offset, spec.count)), probes: 12, loss: loss)
        }
    }
}

@Suite struct DialogueFormatTests {
    static func write(_ lines: [String]) throws -> String {
        let path = NSTemporaryDirectory() + "dialogues-\(UUID().uuidString).jsonl"
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Every format reads into the same dialogues; the format is named once per file.
    @Test func everyFormatReads() throws {
        let sft = try Self.write([#"{"prompt": "hi", "response": "hello"}"#])
        let messages = try Self.write([
            #"{"messages": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}, {"role": "assistant", "content": "goodbye"}]}"#
        ])
        let rated = try Self.write([#"{"prompt": "hi", "chosen": "hello", "rejected": "go away", "rating": "better"}"#])
        let lists = try Self.write([
            #"{"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go away"}]}"#
        ])
        let hh = try Self.write([
            #"{"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}"#
        ])
        var log: [String] = []
        let (f1, e1) = try DialogueData.load(sft, preferences: false) { log.append($0) }
        let (f2, e2) = try DialogueData.load(messages, preferences: false) { log.append($0) }
        #expect(f1 == .promptResponse && f2 == .messages && log.contains { $0.contains("messages format") })
        guard case let .dialogue(one) = e1[0].example, case let .dialogue(two) = e2[0].example else {
            Issue.record("not dialogues")
            return
        }
        #expect(one.turns == [Turn(.user, "hi"), Turn(.assistant, "hello")] && one.system == nil)
        #expect(two.system == "be kind" && two.turns.count == 4 && two.exchanges == 2)
        var chosen: [[Turn]] = []
        for (path, format) in [(rated, DataFormat.ratedPairs), (lists, .messagePairs), (hh, .hhRLHF)] {
            let (found, examples) = try DialogueData.load(path, preferences: true) { _ in }
            #expect(found == format)
            guard case let .preference(c, r, rating) = examples[0].example else {
                Issue.record("\(format): not a pair")
                continue
            }
            #expect(
                r.turns.last == Turn(.assistant, "go away")
                    && (format == .ratedPairs ? rating == .better : rating == .negligiblyBetter))
            chosen.append(c.turns.map { Turn($0.role, $0.content.trimmingCharacters(in: .whitespaces)) })
        }
        #expect(chosen.allSatisfy { $0 == [Turn(.user, "hi"), Turn(.assistant, "hello")] }, "\(chosen)")
    }

    /// The loss is on every assistant turn and its </s>, never on system or user text, in both templates.
    @Test func masksCoverEveryAnswerAndNothingElse() throws {
        let tokenizer = try fineTuneTokenizer()
        let dialogue = try Dialogue([
            Turn(.system, "be kind"), Turn(.user, "what is the capital"), Turn(.assistant, "paris"),
            Turn(.user, "repeat after me"), Turn(.assistant, "hello world"),
        ])
        for template in [
            try ChatTemplate(.separator, tokenizer: tokenizer), try ChatTemplate(.llama2Chat, tokenizer: tokenizer),
        ] {
            let (tokens, answer) = template.encode(dialogue)
            var expected: [Bool] = []
            expected += [Bool](
                repeating: false, count: template.prompt(user: "what is the capital", system: "be kind").count)
            expected += [Bool](repeating: true, count: template.answer("paris").count)
            expected += [Bool](repeating: false, count: template.prompt(user: "repeat after me").count)
            expected += [Bool](repeating: true, count: template.answer("hello world").count)
            #expect(answer == expected && tokens.count == expected.count, "\(template.kind)")
            #expect(
                tokens.filter { $0 == tokenizer.eosId }.count == 2 && tokens.filter { $0 == tokenizer.bosId }.count == 2
            )
            // Every </s> is an answer token, every <s> is not.
            for (t, a) in zip(tokens, answer) where t == tokenizer.eosId || t == tokenizer.bosId {
                #expect(a == (t == tokenizer.eosId))
            }
        }
    }

    /// Bad lines are named file:line with the reason and skipped; a file with none good is refused.
    @Test func badLinesAreNamed() throws {
        let path = try Self.write([
            #"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#,
            #"{"messages": [{"role": "assistant", "content": "I start"}, {"role": "user", "content": "no"}]}"#,
            #"{"messages": [{"role": "user", "content": "only a question"}]}"#,
            #"{"prompt": "mixed", "response": "formats"}"#,
            #"{"messages": [{"role": "user"}]}"#,
            "not json",
        ])
        var log: [String] = []
        let (_, examples) = try DialogueData.load(path, preferences: false) { log.append($0) }
        #expect(examples.count == 1)
        for (line, words) in [
            (2, "alternate"), (3, "without an assistant turn"), (4, "but the file is messages"), (5, "role"),
            (6, "not a JSON object"),
        ] {
            #expect(log.contains { $0.hasPrefix("\(path):\(line):") && $0.contains(words) }, "line \(line): \(log)")
        }
        #expect(throws: TrainingError.self) {
            try DialogueData.load(try Self.write(["{}"]), preferences: false) { _ in }
        }
    }
}

@Suite struct LineEndingTests {
    /// SFT and preference files with Windows or mixed line ends give the same examples as with LF, and a line
    /// that is not UTF-8 is skipped naming its line and byte (never read with U+FFFD in it).
    @Test func crlfAndInvalidUTF8() throws {
        let lines = [
            #"{"prompt": "a", "response": "b"}"#,
            #"{"messages": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}"#,
            #"{"prompt": "e", "response": "f"}"#,
        ]
        func load(_ bytes: Data) throws -> ([String], [Int]) {
            let path = NSTemporaryDirectory() + "sft-\(UUID().uuidString).jsonl"
            defer { try? FileManager.default.removeItem(atPath: path) }
            try bytes.write(to: URL(fileURLWithPath: path))
            var messages: [String] = []
            let (_, examples) = try DialogueData.load(path, preferences: false) { messages.append($0) }
            return (messages.filter { $0.contains("skipped") }, examples.map(\.line))
        }
        let lf = try load(Data(lines.joined(separator: "\n").utf8))
        let crlf = try load(Data((lines.joined(separator: "\r\n") + "\r\n").utf8))
        let mixed = try load(Data((lines[0] + "\r\n" + lines[1] + "\n" + lines[2]).utf8))
        #expect(lf.1 == [1, 3] && crlf.1 == lf.1 && mixed.1 == lf.1 && lf.0.count == 1, "\(lf) \(crlf) \(mixed)")
        var broken = Data((lines[0] + "\n").utf8)
        broken.append(contentsOf: Array(#"{"prompt": "x"#.utf8) + [0xC0] + Array(#"", "response": "y"}"#.utf8))
        let bad = try load(broken)
        #expect(bad.1 == [1] && bad.0.contains { $0.contains(":2: not valid UTF-8 at byte 14") }, "\(bad)")
    }
}

@Suite struct LengthPolicyTests {
    /// Refuse (the default for scoring and generation) names the input and both lengths; left keeps the end,
    /// right the start; a short input passes untouched.
    @Test func truncationPolicies() throws {
        let ids: [Int32] = [1, 2, 3, 4, 5]
        #expect(try Truncation.refuse.apply(ids, limit: 5, what: "x") == ids)
        #expect { try Truncation.refuse.apply(ids, limit: 3, what: "standard input line 7") } throws: {
            "\($0)".contains("standard input line 7 is 5 tokens, more than the 3") && "\($0)".contains("--truncate")
        }
        #expect(try Truncation.left.apply(ids, limit: 3, what: "x") == [3, 4, 5])
        #expect(try Truncation.right.apply(ids, limit: 3, what: "x") == [1, 2, 3])
    }

    /// A dialogue whose assistant turn is empty is skipped and named, not trained on.
    @Test func emptyAssistantTurnsAreSkipped() throws {
        let path = NSTemporaryDirectory() + "empty-\(UUID().uuidString).jsonl"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try [#"{"prompt": "a", "response": "b"}"#, #"{"prompt": "c", "response": "  "}"#].joined(separator: "\n")
            .write(toFile: path, atomically: true, encoding: .utf8)
        var log: [String] = []
        let (_, examples) = try DialogueData.load(path, preferences: false) { log.append($0) }
        #expect(examples.map(\.line) == [1])
        #expect(log.contains { $0.contains("\(path):2") && $0.contains("assistant turn is empty") }, "\(log)")
    }
}

@Suite struct DataReadOnceTests {
    /// Split by bytes over any number of ranks, every line is read by exactly one rank, whole, in file order:
    /// long and short lines, CRLF ends, a last line without a newline, a rank whose range lies inside one line.
    @Test func byteRangesPartitionTheLines() throws {
        var lines: [String] = []
        var generator = SplitMix64(seed: 5)
        for i in 0..<40 {
            let width = Int(generator.next() % 300)
            lines.append("{\"i\": \(i), \"pad\": \"\(String(repeating: "x", count: width))\"}\(i % 3 == 0 ? "\r" : "")")
        }
        for ending in ["", "\n"] {
            let path = NSTemporaryDirectory() + "ranges-\(UUID().uuidString).jsonl"
            defer { try? FileManager.default.removeItem(atPath: path) }
            let whole = lines.joined(separator: "\n") + ending
            try whole.write(toFile: path, atomically: true, encoding: .utf8)
            for ranks in [1, 2, 3, 7, 64] {
                let parts = try (0..<ranks).map { try DialogueData.ownedLines(of: path, rank: $0, ranks: ranks) }
                #expect(parts.flatMap { $0 } == Array(whole.utf8), "\(ranks) ranks, ending '\(ending)'")
                for part in parts.dropLast() where !part.isEmpty {
                    #expect(part.last == UInt8(ascii: "\n"), "a part ends at a line's end")
                }
            }
        }
    }
}

/// Parquet data (pyarrow's conversion of JSON Lines, as users convert Hub sets) reads to the same examples, in
/// the same format, with the same skipped rows as the JSON Lines it came from: messages and prompt/response for
/// SFT, message-list pairs (UltraFeedback's shape) and rated pairs for reward models.
@Suite struct ParquetDataTests {
    @Test func parquetReadsAsItsJSONLines() throws {
        let dir = NSTemporaryDirectory() + "ft-parquet-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts").path
        func python(_ arguments: [String]) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3"] + arguments
            try process.run()
            process.waitUntilExit()
            try #require(process.terminationStatus == 0, "python3 with pyarrow is needed (make test installs it)")
        }
        try python(["\(scripts)/make-finetune-data.py", dir, "60", "60"])
        // UltraFeedback's shape, with a row whose role is unknown (skipped, and named, in both).
        let turns = { (a: String) in [["role": "user", "content": "Say \(a)."], ["role": "assistant", "content": a]] }
        var pairs = try (0..<30).map { i in
            String(
                decoding: try JSONSerialization.data(withJSONObject: [
                    "prompt": "Say \(i).", "chosen": turns("\(i) kindly"), "rejected": turns("\(i)"),
                    "score_chosen": 8.5,
                ]), as: UTF8.self)
        }
        pairs[7] =
            #"{"prompt": "x", "chosen": [{"role": "robot", "content": "x"}], "rejected": [{"role": "user", "content": "y"}], "score_chosen": 1.0}"#
        try pairs.joined(separator: "\n").write(toFile: dir + "/ultra.jsonl", atomically: true, encoding: .utf8)
        for (name, preferences) in [("sft", false), ("chat", false), ("prefs", true), ("ultra", true)] {
            try python(["\(scripts)/jsonl-to-parquet.py", "\(dir)/\(name).jsonl", "\(dir)/\(name).parquet", "16"])
            var said: [[String]] = [[], []]
            let (jsonFormat, json) = try DialogueData.load("\(dir)/\(name).jsonl", preferences: preferences) {
                said[0].append($0)
            }
            let (parquetFormat, parquet) = try DialogueData.load("\(dir)/\(name).parquet", preferences: preferences) {
                said[1].append($0)
            }
            #expect(parquetFormat == jsonFormat && json.count > 20, "\(name)")
            #expect(parquet.map(\.line) == json.map(\.line), "\(name): rows are numbered as lines")
            #expect("\(parquet.map(\.example))" == "\(json.map(\.example))", "\(name)")
            #expect(said[1].count == said[0].count, "\(name): \(said)")
            if name == "ultra" {
                #expect(jsonFormat == .messagePairs)
                #expect(
                    said[1].contains { $0.contains("ultra.parquet row 8: ") && $0.hasSuffix("row skipped") }, "\(said)")
            }
        }
    }
}

@Suite struct DPOTests {
    /// The DPO loss through every log-prob of both responses and the whole trunk, against finite differences,
    /// with the policy moved away from the reference (so the loss is not at ln 2 and its slope is not ½).
    @Test func dpoLossGradientMatchesFiniteDifferences() throws {
        let config = LlamaConfig(
            dim: 12, nLayers: 1, nHeads: 3, nKVHeads: 1, vocabSize: 20, ffnHiddenSize: 16, maxSeqLen: 8)
        let model = try LlamaModel(config: config)
        model.initialize(seed: 6, std: 0.4)
        let pairs = [
            PreferencePair(
                chosen: [1, 4, 5, 9, 2], rejected: [1, 4, 7, 2], rating: .better, margin: 0,
                chosenAnswer: [false, false, true, true, true], rejectedAnswer: [false, false, true, true]),
            PreferencePair(
                chosen: [1, 3, 3, 8, 2], rejected: [1, 3, 6, 11, 12, 2], rating: .negligiblyBetter, margin: 0,
                chosenAnswer: [false, true, true, true, true],
                rejectedAnswer: [false, true, true, true, true, true]),
        ]
        let objective = try DPOObjective(
            pairs: try ShardedExamples(
                local: pairs, world: nil, encode: PreferencePair.encode, decode: PreferencePair.decode),
            pairsPerBatch: 2, microBatchSequences: 4, seqLen: 8, seed: 1, padToken: 2, beta: 0.7)
        try objective.begin(
            models: ModelSet(primary: model), world: try Communicator.world(), startStep: 0, checkpointDirectory: nil)
        // The reference: each response's answer tokens, summed, by a plain softmax over the forward's logits.
        let direct = try SequenceLogProbs.forward(
            pairs.flatMap(\.sequences), model: model, seqLen: 8, padToken: 2)
        #expect(zip(direct, objective.reference).allSatisfy { abs($0 - $1) < 1e-5 * max(1, abs($0)) })
        let logits = model.logits, V = config.vocabSize
        for (s, sequence) in pairs.flatMap(\.sequences).enumerated() {
            var sum = 0.0
            for t in 1..<sequence.tokens.count where sequence.answer[t] {
                let row = (s * 8 + t - 1) * V
                let top = (0..<V).map { Double(logits[row + $0]) }.max()!
                let z = (0..<V).reduce(0.0) { $0 + exp(Double(logits[row + $1]) - top) }
                sum += Double(logits[row + Int(sequence.tokens[t])]) - top - log(z)
            }
            #expect(abs(sum - direct[s]) < 1e-4, "sequence \(s): \(sum) against \(direct[s])")
        }
        model.initialize(seed: 7, std: 0.3)
        _ = try objective.load(step: 0, rank: 0, worldSize: 1)
        model.gradients.zero()
        let lossSum = try objective.microStep(0, model: model, scale: 0.5, gradientsReady: nil)
        func loss() -> Double {
            let now = try! SequenceLogProbs.forward(pairs.flatMap(\.sequences), model: model, seqLen: 8, padToken: 2)
            return (0..<2).reduce(0.0) { total, i in
                let d =
                    0.7
                    * ((now[2 * i] - objective.reference[2 * i]) - (now[2 * i + 1] - objective.reference[2 * i + 1]))
                return total + softplus(-d)
            } * 0.5
        }
        #expect(abs(lossSum * 0.5 - loss()) < 1e-6 && abs(loss() - log(2.0)) > 1e-3)
        for spec in model.layout.tensors {
            expectTensorGradient(
                spec.name, values: model.parameters.slice(spec.offset, spec.count),
                gradient: UnsafeBufferPointer(model.gradients.slice(spec.offset, spec.count)), probes: 12, loss: loss)
        }
    }

    static var fixture: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/dpo").path
    }

    /// Two steps of `llama-train dpo`'s objective through the trainer (reference pass, AdamW, clipping) on the
    /// shared tiny model and 8 pairs, against the float64 computation and TRL's DPOTrainer that
    /// scripts/make-dpo-fixture.py wrote: the loss of each step, and every parameter after the second.
    @Test func twoStepsMatchTheFloat64ReferenceAndTRL() throws {
        let modelDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../../shared/fixtures/llama-tiny").standardizedFileURL.path
        let json =
            try JSONSerialization.jsonObject(
                with: try Data(contentsOf: URL(fileURLWithPath: Self.fixture + "/pairs.json"))) as! [String: Any]
        let beta = json["beta"] as! Double, lr = json["learning_rate"] as! Double, steps = json["steps"] as! Int
        let pairs = (json["pairs"] as! [[String: [Int]]]).map { p -> PreferencePair in
            let prompt = p["prompt"]!.map(Int32.init)
            let (chosen, rejected) = (p["chosen"]!.map(Int32.init), p["rejected"]!.map(Int32.init))
            return PreferencePair(
                chosen: prompt + chosen, rejected: prompt + rejected, rating: .better, margin: 0,
                chosenAnswer: prompt.map { _ in false } + chosen.map { _ in true },
                rejectedAnswer: prompt.map { _ in false } + rejected.map { _ in true })
        }
        var config = RunConfig(model: try HuggingFace.readConfig(path: modelDirectory + "/config.json"))
        config.train.steps = steps
        config.train.learningRate = lr
        config.train.warmupSteps = 0
        config.train.minLRRatio = 1
        config.train.seqLen = 32
        config.train.microBatch = 4
        config.train.globalBatchTokens = pairs.count * 2 * 32
        // fp32 on every CPU: the default is bf16 where the CPU has it, which the float64 reference is not.
        config.train.precision = .fp32
        var finetune = FineTuneSettings(data: Self.fixture + "/pairs.json")
        finetune.initFrom = modelDirectory
        config.finetune = finetune
        let objective = try DPOObjective(
            pairs: try ShardedExamples(
                local: pairs, world: nil, encode: PreferencePair.encode, decode: PreferencePair.decode),
            pairsPerBatch: pairs.count, microBatchSequences: 4, seqLen: 32, seed: 3, padToken: 2, beta: beta)
        var options = TrainOptions()
        options.log = { _ in }
        let trainer = try Trainer(
            config: config, world: try Communicator.world(), options: options,
            plan: StagePlan(.dpo, objective: objective))
        let outcome = try trainer.run()
        let expected = try SafeTensorsFile(path: Self.fixture + "/expected.safetensors")
        let reference = try expected.floats("ref_logps")
        #expect(
            zip(objective.reference, reference).allSatisfy { abs($0 - Double($1)) < 1e-4 * max(1, abs(Double($1))) })
        let losses = outcome.history.map(\.loss)
        let float64 = try expected.floats("loss"), trl = try expected.floats("trl_loss")
        #expect(abs(losses[0] - log(2.0)) < 1e-6, "the first loss is ln 2: \(losses[0])")
        // TRL's float32 losses sit within 5e-4 of the formula's (its log-probs carry more than float32 rounding:
        // scripts/make-dpo-fixture.py says how much); the float64 ones are the strict reference.
        for s in 0..<steps {
            #expect(abs(losses[s] - Double(float64[s])) < 1e-5, "step \(s + 1): \(losses[s]) against \(float64[s])")
            #expect(
                abs(losses[s] - Double(trl[s])) < 5e-4 * Double(trl[s]),
                "step \(s + 1): \(losses[s]) against TRL's \(trl[s])")
        }
        #expect(abs(losses[1] - losses[0]) > 1e-4, "the second step's loss moved: \(losses)")
        for spec in trainer.model.layout.tensors {
            let ours = trainer.model.parameters.slice(spec.offset, spec.count)
            // As the model fixture: AdamW's steps of lr 1e-3 within 1e-5 of float64's. TRL's within AdamW's
            // bound only, lr per step either way (see above).
            for (source, tolerance) in [("step2.", Float(1e-5)), ("trl_step2.", Float(2 * lr * Double(steps)))] {
                let theirs = try expected.floats(source + spec.name)
                let worst = zip(ours, theirs).map { abs($0 - $1) }.max()!
                #expect(worst <= tolerance, "\(source)\(spec.name): off by \(worst)")
            }
        }
    }
}

/// PPO against scripts/make-ppo-fixture.py (float64 PyTorch from the formulas): the first iteration's old and
/// reference log-probs at temperature 0.8, values, scores, whitened scores, per-token rewards, advantages and
/// returns, and the first mini-batch's losses (where the policy and value model are still the old ones).
@Suite(.serialized) struct PPOTests {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/ppo").path
    static let policyDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../../shared/fixtures/llama-tiny").standardizedFileURL.path

    static func close(_ got: [Double], _ expected: [Float], _ name: String, tolerance: Double = 2e-5) {
        #expect(got.count == expected.count, "\(name): \(got.count) values, expected \(expected.count)")
        let scale = max(1, expected.map { abs(Double($0)) }.max() ?? 1)
        let worst = zip(got, expected).map { abs($0 - Double($1)) }.max() ?? .nan
        #expect(worst <= tolerance * scale, "\(name): max |difference| \(worst) (scale \(scale))")
    }

    @Test func firstIterationMatchesTheFloat64Reference() throws {
        let json =
            try JSONSerialization.jsonObject(
                with: try Data(contentsOf: URL(fileURLWithPath: Self.fixture + "/rollouts.json")))
            as! [String: Any]
        let s = json["settings"] as! [String: Any]
        let temperature = s["temperature"] as! Double, klCoef = s["kl_coef"] as! Double
        let rollouts = ((json["iterations"] as! [[[String: [Int]]]])[0]).map {
            (prompt: $0["prompt"]!.map(Int32.init), response: $0["response"]!.map(Int32.init))
        }
        let expected = try SafeTensorsFile(path: Self.fixture + "/expected.safetensors")
        let policy = try HuggingFace.loadModel(directory: Self.policyDirectory)
        let reward = try HuggingFace.loadModel(directory: Self.fixture + "/reward")
        #expect(reward.config.heads == [.score])
        var valueConfig = reward.config
        valueConfig.heads = [.value]
        let value = try LlamaModel(config: valueConfig, purpose: .inference)
        value.parameters.pointer.update(from: reward.parameters.pointer, count: reward.parameters.count)
        let policyEngine = try InferenceEngine(model: policy, slots: 1)
        let rewardEngine = try InferenceEngine(model: reward, slots: 1)
        var old: [[Double]] = [], values: [[Double]] = [], scores: [Double] = []
        for r in rollouts {
            old.append(try policyEngine.logprobs(prompt: r.prompt, completion: r.response, temperature: temperature))
            let tokens = r.prompt + r.response
            _ = try value.forward(
                tokens: tokens, targets: tokens.map { _ in LlamaModel.ignoreIndex }, batch: 1, seqLen: tokens.count)
            let v = value.outputs(of: .value)
            values.append((r.prompt.count - 1..<tokens.count - 1).map { Double(v[$0]) })
            scores.append(Double(try rewardEngine.reward(tokens)))
        }
        Self.close(old.flatMap { $0 }, try expected.floats("it1.old_logprobs"), "old log-probs")
        Self.close(old.flatMap { $0 }, try expected.floats("it1.ref_logprobs"), "reference log-probs")
        Self.close(values.flatMap { $0 }, try expected.floats("it1.values"), "values")
        Self.close(scores, try expected.floats("it1.scores"), "scores")
        let whitened = try PPOMath.whiten(scores, world: nil)
        Self.close(whitened, try expected.floats("it1.whitened_scores"), "whitened scores")
        let rewards = rollouts.indices.map {
            PPOMath.tokenRewards(old: old[$0], reference: old[$0], score: whitened[$0], klCoef: klCoef)
        }
        Self.close(rewards.flatMap { $0 }, try expected.floats("it1.rewards"), "rewards")
        let raw = rollouts.indices.map {
            PPOMath.advantages(
                rewards: rewards[$0], values: values[$0], gamma: s["gamma"] as! Double, lambda: s["lam"] as! Double)
        }
        let returns = rollouts.indices.map { i in zip(raw[i], values[i]).map(+) }
        Self.close(returns.flatMap { $0 }, try expected.floats("it1.returns"), "returns")
        let advantages = try PPOMath.whiten(raw.flatMap { $0 }, world: nil)
        Self.close(advantages, try expected.floats("it1.advantages"), "advantages")
        // Mini-batch 1 (rollouts 0 and 1) meets the models unchanged: ρ = 1 and V = V_old.
        let first = old[0].count + old[1].count
        let policyTerms = PPOMath.policyLoss(
            new: Array(old.flatMap { $0 }[..<first]), old: Array(old.flatMap { $0 }[..<first]),
            advantages: Array(advantages[..<first]), clip: s["clip"] as! Double)
        let valueTerms = PPOMath.valueLoss(
            values: Array(values.flatMap { $0 }[..<first]), oldValues: Array(values.flatMap { $0 }[..<first]),
            returns: Array(returns.flatMap { $0 }[..<first]), clip: s["value_clip"] as! Double)
        Self.close(
            [policyTerms.loss / Double(first), valueTerms.loss / Double(first)],
            [try expected.floats("it1.policy_loss")[0], try expected.floats("it1.value_loss")[0]], "losses")
        #expect(policyTerms.clipped == 0 && valueTerms.clipped == 0)
    }

    /// Llama 2's gate inside PPO: a safety model (here the reward model with its score negated, so the two
    /// disagree on every rollout) scores a safety-tagged prompt, and any rollout it scores below the threshold;
    /// the helpfulness model scores the rest. The iteration's mean raw reward says which scored each.
    @Test func theSafetyGatePicksEachRolloutsJudge() throws {
        let json =
            try JSONSerialization.jsonObject(
                with: try Data(contentsOf: URL(fileURLWithPath: Self.fixture + "/rollouts.json")))
            as! [String: Any]
        let batch = (json["iterations"] as! [[[String: [Int]]]])[0]
        let helpfulness = try SafeTensorsFile(path: Self.fixture + "/expected.safetensors").floats("it1.scores").map(
            Double.init)
        let reward = try HuggingFace.loadModel(directory: Self.fixture + "/reward")
        let (scoreOffset, dim) = (reward.layout.tensors.first { $0.name == "score.weight" }!.offset, reward.config.dim)
        for i in 0..<dim { reward.parameters.pointer[scoreOffset + i] *= -1 }
        let safetyDirectory = NSTemporaryDirectory() + "ppo-safety-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: safetyDirectory) }
        try HuggingFace.save(
            config: reward.config, layout: reward.layout, parameters: reward.parameters, directory: safetyDirectory)
        func meanReward(threshold: Double, tagged: Set<Int>) throws -> Double {
            let fixed = [
                batch.enumerated().map { i, r in
                    PPORollout(
                        prompt: PPOPrompt(ids: r["prompt"]!.map(Int32.init), safety: tagged.contains(i)),
                        response: r["response"]!.map(Int32.init))
                }
            ]
            var config = RunConfig(model: try HuggingFace.readConfig(path: Self.policyDirectory + "/config.json"))
            config.train.precision = .fp32
            (config.train.seqLen, config.train.microBatch, config.train.warmupSteps) = (32, 1, 0)
            var finetune = FineTuneSettings(data: Self.fixture + "/rollouts.json")
            finetune.initFrom = Self.policyDirectory
            config.finetune = finetune
            var ppo = PPOSettings(rewardModel: Self.fixture + "/reward")
            (ppo.batchSize, ppo.miniBatchSize, ppo.iterations) = (4, 4, 1)
            (ppo.safetyRewardModel, ppo.safetyThreshold) = (safetyDirectory, threshold)
            config.ppo = ppo
            config.train.steps = 1
            let objective = PPOObjective(
                settings: ppo, microBatch: 1, prompts: [], fixed: fixed, tokenizer: nil, padToken: 2, log: { _ in })
            var options = TrainOptions()
            options.log = { _ in }
            _ = try Trainer(
                config: config, world: try Communicator.world(), options: options,
                plan: StagePlan(
                    .ppo, objective: objective, extraModels: try PPOObjective.models(config: config, file: "-"))
            ).run()
            return objective.iterations[0].rawReward
        }
        let mean = helpfulness.reduce(0, +) / 4
        // σ(r_s) < 0 never holds: helpfulness scores all but the tagged prompt.
        #expect(abs(try meanReward(threshold: 0, tagged: []) - mean) < 1e-5)
        #expect(abs(try meanReward(threshold: 0, tagged: [1]) - (mean - helpfulness[1] / 2)) < 1e-5)
        // σ(r_s) < 1 always holds: safety scores every rollout.
        #expect(abs(try meanReward(threshold: 1, tagged: []) + mean) < 1e-5)
    }

    /// `ppo --rollouts` in-process: two iterations of two mini-batches on the fixture's rollouts end with both
    /// models' parameters where float64 PyTorch puts them, with the same losses on the way.
    @Test func twoIterationsOnFixedRolloutsMatchTheFloat64Reference() throws {
        let json =
            try JSONSerialization.jsonObject(
                with: try Data(contentsOf: URL(fileURLWithPath: Self.fixture + "/rollouts.json")))
            as! [String: Any]
        let s = json["settings"] as! [String: Any]
        let fixed = (json["iterations"] as! [[[String: [Int]]]]).map { batch in
            batch.map {
                PPORollout(
                    prompt: PPOPrompt(ids: $0["prompt"]!.map(Int32.init), safety: false),
                    response: $0["response"]!.map(Int32.init))
            }
        }
        var config = RunConfig(model: try HuggingFace.readConfig(path: Self.policyDirectory + "/config.json"))
        config.train.precision = .fp32
        config.train.learningRate = s["lr"] as! Double
        config.train.warmupSteps = 0
        config.train.minLRRatio = 1
        config.train.seqLen = 32
        config.train.microBatch = 1
        var finetune = FineTuneSettings(data: Self.fixture + "/rollouts.json")
        finetune.initFrom = Self.policyDirectory
        config.finetune = finetune
        var ppo = PPOSettings(rewardModel: Self.fixture + "/reward")
        ppo.batchSize = s["rollouts"] as! Int
        ppo.miniBatchSize = s["mini_batch"] as! Int
        ppo.iterations = s["iterations"] as! Int
        ppo.klCoef = s["kl_coef"] as! Double
        ppo.clip = s["clip"] as! Double
        ppo.valueClip = s["value_clip"] as! Double
        ppo.gamma = s["gamma"] as! Double
        ppo.lam = s["lam"] as! Double
        ppo.temperature = s["temperature"] as! Double
        ppo.valueLR = s["value_lr"] as? Double
        config.ppo = ppo
        config.train.steps = ppo.iterations * ppo.miniBatches
        let objective = PPOObjective(
            settings: ppo, microBatch: 1, prompts: [], fixed: fixed, tokenizer: nil, padToken: 2, log: { _ in })
        var options = TrainOptions()
        options.log = { _ in }
        let trainer = try Trainer(
            config: config, world: try Communicator.world(), options: options,
            plan: StagePlan(.ppo, objective: objective, extraModels: try PPOObjective.models(config: config, file: "-"))
        )
        let outcome = try trainer.run()
        let expected = try SafeTensorsFile(path: Self.fixture + "/expected.safetensors")
        let policyLosses = try expected.floats("it1.policy_loss") + expected.floats("it2.policy_loss")
        Self.close(outcome.history.map(\.loss), policyLosses, "policy losses", tolerance: 1e-5)
        let valueLosses = try expected.floats("it1.value_loss") + expected.floats("it2.value_loss")
        Self.close(
            objective.valueLosses.map { $0.loss / Double($0.tokens) }, valueLosses, "value losses", tolerance: 1e-5)
        Self.close(
            objective.iterations.map(\.rawReward),
            try [expected.floats("it1.scores"), expected.floats("it2.scores")].map { Float($0.reduce(0, +) / 4) },
            "mean raw reward per iteration")
        for (model, prefix) in [(trainer.models[0].model, "policy."), (trainer.models[1].model, "value.")] {
            for tensor in model.layout.tensors {
                let got = UnsafeBufferPointer(start: model.parameters.pointer + tensor.offset, count: tensor.count)
                Self.close(
                    got.map(Double.init), try expected.floats(prefix + tensor.name), prefix + tensor.name,
                    tolerance: 1e-5)
            }
        }
    }
}
