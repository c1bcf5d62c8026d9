// The fine-tuning stages in one process: SFT packing and its answer-only loss, the reward model's margin
// tables and its gradient by finite differences.
import Foundation
import Model
import Testing
import TestSupport
import Tokenizer
@testable import FineTune
import Training
import Configuration
import Support

/// A small tokenizer with a <sep> piece, trained here.
func fineTuneTokenizer() throws -> Tokenizer {
    var options = BPETrainerOptions()
    options.vocabSize = 300
    options.userDefinedSymbols = ["<sep>"]
    let text: [Substring] = ["what is the capital of france", "paris is the capital", "repeat after me hello world",
                             "the cat sat on the mat", "answer the question please", "numbers like 12 and 345"]
    return try Tokenizer(model: BPETrainer.train(lines: text, options: options))
}

@Suite struct SFTTests {
    static let pairs: [(prompt: String, response: String)] = [
        ("what is the capital of france", "paris"), ("repeat after me", "hello world"), ("the cat", "sat on the mat"),
        ("answer the question", "12 and 345"), ("please", "the capital is paris"),
    ]

    /// No token lost or duplicated: each epoch's stream is every example once, in that epoch's order; the
    /// sequences tile the stream; the separator closes every prompt; only answer positions are targets.
    @Test func packingKeepsEveryTokenOnce() throws {
        let tokenizer = try fineTuneTokenizer()
        let format = try SeparatorFormat(tokenizer: tokenizer, separator: "<sep>")
        let sep = format.separator
        let examples = SFTPacker.encode(Self.pairs, format: format)
        for (e, pair) in zip(examples, Self.pairs) {
            let prompt = [tokenizer.bosId] + tokenizer.encode(pair.prompt) + [sep]
            #expect(Array(e.tokens.prefix(prompt.count)) == prompt && e.tokens.last == tokenizer.eosId)
            #expect(e.answer == [Bool](repeating: false, count: prompt.count) + [Bool](repeating: true, count: e.tokens.count - prompt.count))
        }
        let packer = try SFTPacker(examples: examples, seqLen: 8, seed: 4)
        for epoch in 0..<2 {
            let (stream, answer) = packer.stream(epoch: epoch)
            #expect(stream == packer.order(epoch: epoch).flatMap { examples[$0].tokens })
            #expect(packer.order(epoch: epoch).sorted() == Array(examples.indices))
            let (tokens, targets) = try packer.batch(epoch, globalBatch: packer.sequencesPerEpoch, rank: 0, worldSize: 1)
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
        let examples = SFTPacker.encode(Self.pairs, format: try SeparatorFormat(tokenizer: tokenizer, separator: "<sep>"))
        let packer = try SFTPacker(examples: examples, seqLen: 16, seed: 1)
        let (tokens, targets) = try packer.batch(0, globalBatch: 2, rank: 0, worldSize: 1)
        let model = try LlamaModel(config: LlamaConfig(dim: 16, nLayers: 1, nHeads: 2, vocabSize: tokenizer.vocabSize, ffnHiddenSize: 32, maxSeqLen: 16))
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
        model.backward(lossScale: 1 / Float(count))
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
        #expect(Rating(text: "unsure") == .negligiblyBetter && Rating(text: "Significantly Better") == .significantlyBetter)
        #expect(Rating(text: "much better") == nil)
        #expect(throws: TrainingError.self) { try Rating.better.margin("huge") }
    }

    /// Pairs cut to seq_len keep their end; a pair whose chosen and rejected sequences become identical
    /// (zero gradient for the whole run) is skipped and named, and a file of only such pairs is refused.
    @Test func pairsIdenticalAfterTheCutAreSkippedAndNamed() throws {
        let format = try SeparatorFormat(tokenizer: try fineTuneTokenizer(), separator: "<sep>")
        let path = NSTemporaryDirectory() + "prefs-\(UUID().uuidString).jsonl"
        let long = String(repeating: "the cat sat on the mat ", count: 6)
        let lines = [#"{"prompt": "please", "chosen": "paris \#(long)", "rejected": "hello \#(long)", "rating": "better"}"#,
                     #"{"prompt": "please", "chosen": "paris", "rejected": "hello world", "rating": "better"}"#]
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        var messages: [String] = []
        let pairs = try PreferenceData.load(path, format: format, seqLen: 12, margin: "small", log: { messages.append($0) })
        #expect(pairs.count == 1 && pairs[0].chosen != pairs[0].rejected)
        #expect(messages.contains { $0.contains("\(path):1") && $0.contains("identical") }, "\(messages)")
        try lines[0].write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try PreferenceData.load(path, format: format, seqLen: 12, margin: "small", log: { _ in }) } throws: {
            "\($0)".contains("no pair")
        }
    }

    /// The ranking loss through the scalar head and the whole trunk, against finite differences.
    @Test func rankingLossGradientMatchesFiniteDifferences() throws {
        let config = LlamaConfig(dim: 12, nLayers: 1, nHeads: 3, nKVHeads: 1, vocabSize: 20, ffnHiddenSize: 16, maxSeqLen: 6)
        var reward = config
        reward.rewardHead = true
        let model = try LlamaModel(config: reward)
        model.initialize(seed: 6, std: 0.4)
        #expect(model.layout.lmHead.name == "score.weight" && model.layout.lmHead.shape == [1, 12])
        let pairs = [PreferencePair(chosen: [1, 4, 5, 9], rejected: [1, 4, 7], rating: .better, margin: 2.0 / 3),
                     PreferencePair(chosen: [1, 3, 3, 3, 8, 2], rejected: [1, 2, 6, 11, 2], rating: .negligiblyBetter, margin: 0)]
        let objective = try RewardObjective(pairs: pairs, pairsPerBatch: 2, microBatchSequences: 4, seqLen: 6, seed: 1, padToken: 2)
        _ = try objective.load(step: 0, rank: 0, worldSize: 1)
        model.gradients.zero()
        _ = try objective.microStep(0, model: model, scale: 0.5, gradientsReady: nil)
        func loss() -> Double {
            let batch = objective.currentPairs
            let r = try! RewardObjective.forward(batch.flatMap { [$0.chosen, $0.rejected] }, model: model, seqLen: 6, padToken: 2)
            return zip(batch.indices, batch).reduce(0.0) { $0 + softplus(-Double(r.values[2 * $1.0] - r.values[2 * $1.0 + 1] - $1.1.margin)) } * 0.5
        }
        for spec in model.layout.tensors {
            let original = Array(model.parameters.slice(spec.offset, spec.count))
            let analytic = Array(model.gradients.slice(spec.offset, spec.count))
            let probes = stride(from: 0, to: spec.count, by: max(1, spec.count / 12)).map { $0 }
            expectGradient(spec.name, at: probes.map { original[$0] }, analytic: probes.map { analytic[$0] }) { values in
                let p = model.parameters.slice(spec.offset, spec.count)
                for (i, v) in zip(probes, values) { p[i] = v }
                defer { for i in probes { p[i] = original[i] } }
                return loss()
            }
        }
    }
}
