// The engine against transformers on a model we exported (Fixtures/generation, written by
// scripts/make-generation-fixture.sh): greedy continuations of ragged prompts decoded together, token for token
// against `generate(do_sample=False)` (KV-cached), and the log-probs of given completions against
// `log_softmax` of its logits gathered at the same tokens.
import Foundation
import Model
import Support
import Testing

@testable import Inference

@Suite struct TransformersFixtureTests {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/generation").path

    /// What the fixture's model is: drawn here, so the script and this test agree on it.
    static func model() throws -> LlamaModel {
        let config = LlamaConfig(
            dim: 48, nLayers: 2, nHeads: 4, nKVHeads: 2, vocabSize: 128, ffnHiddenSize: 80, headDim: 12,
            normEps: 1e-5, ropeTheta: 10000, maxSeqLen: 128)
        let model = try LlamaModel(config: config, purpose: .inference)
        model.initialize(seed: 17, std: 0.25)
        return model
    }

    struct Report: Decodable {
        let prompts: [[Int32]]
        let newTokens: Int
        let greedy: [[Int32]]
        let smallestGap: Double
        let scored: [Scored]
        let transformers: String
        struct Scored: Decodable {
            let prompt: [Int32]
            let completion: [Int32]
            let logprobs: [Double]
        }
        enum CodingKeys: String, CodingKey {
            case prompts, greedy, scored, transformers
            case newTokens = "new_tokens"
            case smallestGap = "smallest_gap"
        }
    }

    static func report() throws -> Report {
        try JSONDecoder().decode(
            Report.self, from: Data(contentsOf: URL(fileURLWithPath: fixture + "/transformers.json")))
    }

    @Test func theExportIsTheFixturesModel() throws {
        let model = try Self.model()
        if let out = ProcessInfo.processInfo.environment["WRITE_GENERATION_FIXTURE"] {
            return try HuggingFace.save(
                config: model.config, layout: model.layout, parameters: model.parameters, directory: out)
        }
        let loaded = try HuggingFace.loadModel(directory: Self.fixture)
        #expect(loaded.parameters.array == model.parameters.array, "the committed export is not this model")
    }

    /// All prompts prefilled into their own slots, then decoded together, one token each per call.
    @Test func greedyIsTransformersGenerate() throws {
        let report = try Self.report()
        let model = try HuggingFace.loadModel(directory: Self.fixture)
        let V = model.config.vocabSize
        let engine = try InferenceEngine(model: model, slots: report.prompts.count)
        var next = [Int32](repeating: 0, count: report.prompts.count)
        func argmax(_ row: ArraySlice<Float>) -> Int32 {
            Int32(row.indices.max { row[$0] < row[$1] }! - row.startIndex)
        }
        for (slot, prompt) in report.prompts.enumerated() {
            try engine.prefill(slot: slot, tokens: prompt) { _, logits in next[slot] = argmax(Array(logits)[...]) }
        }
        var got = next.map { [$0] }
        for _ in 1..<report.newTokens {
            let logits = Array(try engine.decode(next.enumerated().map { ($0.offset, $0.element) }))
            next = next.indices.map { argmax(logits[($0 * V)..<(($0 + 1) * V)]) }
            for i in got.indices { got[i].append(next[i]) }
        }
        for i in got.indices {
            #expect(got[i] == report.greedy[i], "prompt \(i) (of \(report.prompts[i].count) tokens)")
        }
        #expect(report.smallestGap > 1e-4, "transformers' top two logits came within \(report.smallestGap)")
    }

    @Test func logprobsAreTransformersLogSoftmax() throws {
        let report = try Self.report()
        let model = try HuggingFace.loadModel(directory: Self.fixture)
        let engine = try InferenceEngine(model: model, slots: 1, prefillChunk: 16)
        for (i, s) in report.scored.enumerated() {
            let ours = try engine.logprobs(prompt: s.prompt, completion: s.completion)
            let worst = zip(ours, s.logprobs).map { abs($0 - $1) }.max() ?? 0
            #expect(ours.count == s.logprobs.count && worst < 1e-4, "pair \(i): differs by \(worst)")
        }
    }
}
