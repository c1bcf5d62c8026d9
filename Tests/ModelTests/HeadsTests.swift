// Heads as a list on the layout: a model with both lm_head and a value head (PPO's policy), against finite
// differences through both heads and the trunk; its language-model part equal to a plain language model's;
// its export readable as a Hugging Face language model, the value head beside it under TRL's name.
import Foundation
import Model
import Support
import TestSupport
import Testing

@Suite struct HeadsTests {
    static let plain = LlamaConfig(
        dim: 12, nLayers: 2, nHeads: 3, nKVHeads: 1, vocabSize: 17, ffnHiddenSize: 20,
        headDim: 6, normEps: 1e-5, ropeTheta: 500, maxSeqLen: 8)
    static var policy: LlamaConfig {
        var c = plain
        c.heads = [.lm, .value]
        return c
    }

    static func batch() -> (tokens: [Int32], targets: [Int32], valueWeights: [Float]) {
        var r = Rand(21)
        let n = 2 * 5
        var targets = (0..<n).map { _ in Int32(r.next() % 17) }
        targets[3] = LlamaModel.ignoreIndex
        return ((0..<n).map { _ in Int32(r.next() % 17) }, targets, r.floats(n))
    }

    /// L = mean cross-entropy + Σ w · value: both heads start the backward, and every tensor's gradient
    /// (the value head's, the lm_head's and the trunk's, which both feed) matches central differences.
    @Test func lmAndValueHeadsMatchFiniteDifferences() throws {
        let model = try LlamaModel(config: Self.policy)
        model.initialize(seed: 5, std: 0.3)
        #expect(model.layout.heads.map(\.kind) == [.lm, .value])
        #expect(
            model.layout.head(.value)?.name == "v_head.summary.weight" && model.layout.head(.value)?.shape == [1, 12])
        #expect(
            model.layout.units.last == model.layout.finalNorm.offset..<model.layout.count,
            "the heads share the last unit")
        let (tokens, targets, w) = Self.batch()
        func loss() -> Double {
            guard let result = try? model.forward(tokens: tokens, targets: targets, batch: 2, seqLen: 5) else {
                return .nan
            }
            return result.meanLoss + weightedSum(Array(model.outputs(of: .value)), w)
        }
        model.gradients.zero()
        let result = try model.forward(tokens: tokens, targets: targets, batch: 2, seqLen: 5)
        try model.backward(heads: [
            .lm: .crossEntropy(scale: 1 / Float(result.targetCount)),
            .value: .given({ d in for i in d.indices { d[i] = w[i] } }),
        ])
        for spec in model.layout.tensors {
            expectTensorGradient(
                spec.name, values: model.parameters.slice(spec.offset, spec.count),
                gradient: UnsafeBufferPointer(model.gradients.slice(spec.offset, spec.count)), probes: 24, loss: loss)
        }
        // A head left out of the backward contributes nothing: the value head's gradient stays zero.
        model.gradients.zero()
        _ = try model.forward(tokens: tokens, targets: targets, batch: 2, seqLen: 5)
        try model.backward(lossScale: 1 / Float(result.targetCount))
        let value = model.layout.head(.value)!
        #expect(model.gradients.array[value.offset..<(value.offset + value.count)].allSatisfy { $0 == 0 })
    }

    /// The policy's lm_head logits and loss are a plain language model's with the same tensors.
    @Test func languageModelPartIsAPlainLanguageModel() throws {
        let policy = try LlamaModel(config: Self.policy), plain = try LlamaModel(config: Self.plain)
        policy.initialize(seed: 7, std: 0.3)
        for spec in plain.layout.tensors {
            let from = try #require(policy.layout.spec(named: spec.name))
            plain.parameters.pointer.advanced(by: spec.offset).update(
                from: policy.parameters.pointer + from.offset, count: spec.count)
        }
        let (tokens, targets, _) = Self.batch()
        let a = try policy.forward(tokens: tokens, targets: targets, batch: 2, seqLen: 5)
        let b = try plain.forward(tokens: tokens, targets: targets, batch: 2, seqLen: 5)
        #expect(Array(policy.outputs(of: .lm)) == Array(plain.logits) && a.lossSum == b.lossSum)
        #expect(policy.parameters.count == plain.parameters.count + Self.plain.dim)
        #expect(policy.flopsPerToken(seqLen: 5) - plain.flopsPerToken(seqLen: 5) == 6 * Double(Self.plain.dim))
    }

    /// Export: config.json says LlamaForCausalLM and lists the heads under our own key; the safetensors hold
    /// exactly a language model's tensors plus v_head.summary.weight; both read back as they were written,
    /// the directory as a policy and, without the head list, as the plain language model.
    @Test func exportReadsBackAsPolicyAndAsLanguageModel() throws {
        let policy = try LlamaModel(config: Self.policy)
        policy.initialize(seed: 8, std: 0.3)
        let dir = try temporaryDirectory()
        try HuggingFace.save(
            config: policy.config, layout: policy.layout, parameters: policy.parameters, directory: dir)
        let json = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/config.json")))
                as? [String: Any])
        #expect(json["architectures"] as? [String] == ["LlamaForCausalLM"])
        #expect(json[HuggingFace.headsKey] as? [String] == ["lm_head", "value"])
        let file = try SafeTensorsFile(path: dir + "/model.safetensors")
        let plainNames = ParameterLayout(config: Self.plain).tensors.map(\.name)
        #expect(Set(file.tensors.keys) == Set(plainNames + ["v_head.summary.weight"]))
        let back = try HuggingFace.loadModel(directory: dir)
        #expect(back.config.heads == [.lm, .value] && back.parameters.array == policy.parameters.array)
        var object = json
        object[HuggingFace.headsKey] = nil
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: dir + "/config.json"))
        let lm = try HuggingFace.loadModel(directory: dir)
        #expect(lm.config.heads == [.lm] && lm.config == Self.plain)
    }

    /// Heads in a config: a list, the legacy reward_head, both refused together, a head named twice refused.
    @Test func headsDecodeFromConfigs() throws {
        func decode(_ extra: String) throws -> LlamaConfig {
            try JSONDecoder().decode(
                LlamaConfig.self, from: Data(#"{"dim": 8, "n_layers": 1, "n_heads": 2\#(extra)}"#.utf8))
        }
        #expect(try decode("").heads == [.lm])
        #expect(try decode(#", "heads": ["lm_head", "value"]"#).heads == [.lm, .value])
        #expect(try decode(#", "reward_head": true"#).heads == [.score])
        #expect { try decode(#", "heads": ["lm_head"], "reward_head": true"#) } throws: {
            ($0 as? ConfigError)?.field == "reward_head" && "\($0)".contains("not both")
        }
        #expect { try decode(#", "heads": ["policy"]"#) } throws: {
            ($0 as? ConfigError)?.field == "heads" && "\($0)".contains("'policy'") && "\($0)".contains("lm_head")
        }
        #expect { try decode(#", "heads": ["value", "value"]"#).validate() } throws: {
            ($0 as? ConfigError)?.field == "heads"
        }
        let round = try JSONDecoder().decode(LlamaConfig.self, from: JSONEncoder().encode(Self.policy))
        #expect(round == Self.policy)
    }
}

/// The export of a policy (lm_head + value) as transformers reads it: scripts/make-policy-export-fixture.sh
/// writes this test's export into Fixtures/policy-export, loads it with LlamaForCausalLM and records the
/// logits and the loading report in transformers.json. Here the same seeded model must export to the same
/// bytes, and our logits must equal the ones transformers computed from them.
@Suite struct PolicyExportFixtureTests {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
        "Fixtures/policy-export"
    ).path

    struct Report: Decodable {
        let tokens: [Int32]
        let logits: [Float]
        let missingKeys: [String]
        let unexpectedKeys: [String]
        enum CodingKeys: String, CodingKey {
            case tokens, logits, missingKeys = "missing_keys", unexpectedKeys = "unexpected_keys"
        }
    }

    @Test func policyExportIsWhatTransformersReads() throws {
        let policy = try LlamaModel(config: HeadsTests.policy)
        policy.initialize(seed: 8, std: 0.3)
        if let out = ProcessInfo.processInfo.environment["WRITE_POLICY_EXPORT"] {
            return try HuggingFace.save(
                config: policy.config, layout: policy.layout, parameters: policy.parameters, directory: out)
        }
        let dir = try temporaryDirectory()
        try HuggingFace.save(
            config: policy.config, layout: policy.layout, parameters: policy.parameters, directory: dir)
        for file in ["model.safetensors", "config.json"] {
            let ours = FileManager.default.contents(atPath: dir + "/" + file),
                committed = FileManager.default.contents(atPath: Self.fixture + "/" + file)
            #expect(
                ours != nil && ours == committed, "\(file) differs from the export transformers read (\(Self.fixture))")
        }
        let report = try JSONDecoder().decode(
            Report.self, from: Data(contentsOf: URL(fileURLWithPath: Self.fixture + "/transformers.json")))
        #expect(report.missingKeys.isEmpty, "transformers initialised \(report.missingKeys) itself")
        #expect(report.unexpectedKeys == ["v_head.summary.weight"], "transformers left \(report.unexpectedKeys) unused")
        let targets = [Int32](repeating: LlamaModel.ignoreIndex, count: report.tokens.count)
        _ = try policy.forward(tokens: report.tokens, targets: targets, batch: 1, seqLen: report.tokens.count)
        let ours = Array(policy.outputs(of: .lm))
        #expect(
            ours.count == report.logits.count && maxDifference(ours, report.logits) <= 1e-5,
            "logits differ from transformers' by \(maxDifference(ours, report.logits))")
    }
}

/// Initialisation by pieces: a rank that keeps some pieces draws exactly the values a replicated model holds
/// there (SplitMix64 positioned in O(1)), for balanced units on 2, 3 and 7 ranks and the flat split, on one
/// thread or four.
@Suite struct PiecewiseInitialisationTests {
    static func units(_ layout: ParameterLayout, ranks: Int, rank: Int) -> HeldPieces {
        HeldPieces(
            layout.units.map { unit in
                let c = (unit.count + ranks - 1) / ranks
                return min(
                    unit.lowerBound + rank * c, unit.upperBound)..<min(
                        unit.lowerBound + (rank + 1) * c, unit.upperBound)
            })
    }

    @Test func everyRankDrawsWhatTheWholeModelHolds() throws {
        let whole = try LlamaModel(config: HeadsTests.policy, purpose: .inference)
        whole.initialize(seed: 11, std: 0.3)
        let all = whole.parameters.array
        #expect(all.contains(1) && all.contains { $0 != 1 && $0 != 0 }, "gains and matrices")
        for ranks in [2, 3, 7] {
            let count = whole.layout.count, per = (count + ranks - 1) / ranks
            for rank in 0..<ranks {
                let flat = HeldPieces([min(rank * per, count)..<min((rank + 1) * per, count)])
                for (held, threads) in [(Self.units(whole.layout, ranks: ranks, rank: rank), 1), (flat, 4)] {
                    let part = try LlamaModel(config: HeadsTests.policy, purpose: .inference, parameterPieces: held)
                    part.threads = threads
                    part.initialize(seed: 11, std: 0.3)
                    let expected = held.pieces.flatMap { all[$0.range] }
                    #expect(part.parameters.array == expected, "rank \(rank) of \(ranks), \(threads) thread(s)")
                }
            }
        }
    }
}
