// Bad input gets a clear error naming the file, field or tensor: configs, safetensors files, weights, tokens.
import Foundation
import Model
import Support
import Testing

func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "llama-train-tests-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

@Suite struct ConfigErrorTests {
    @Test func headsMustDivide() {
        let config = LlamaConfig(dim: 64, nLayers: 1, nHeads: 4, nKVHeads: 3)
        #expect(throws: ConfigError.self) { try config.validate() }
        do { try config.validate() } catch { #expect("\(error)".contains("n_kv_heads")) }
    }

    @Test func dimMustDivideByHeadsUnlessHeadDimGiven() throws {
        #expect(throws: ConfigError.self) { try LlamaConfig(dim: 50, nLayers: 1, nHeads: 4).validate() }
        try LlamaConfig(dim: 50, nLayers: 1, nHeads: 4, headDim: 16).validate()
    }

    @Test func oddHeadDimAndNonPositiveValuesAreRefused() {
        #expect(throws: ConfigError.self) { try LlamaConfig(dim: 36, nLayers: 1, nHeads: 4).validate() }
        #expect(throws: ConfigError.self) { try LlamaConfig(dim: 64, nLayers: 0, nHeads: 4).validate() }
        #expect(throws: ConfigError.self) { try LlamaConfig(dim: 64, nLayers: 1, nHeads: 4, normEps: 0).validate() }
    }

    /// Meta's rule gives the paper's FFN widths.
    @Test func metaFFNWidths() {
        #expect(LlamaConfig(dim: 4096, nLayers: 32, nHeads: 32).ffnHiddenSize == 11008)
        #expect(LlamaConfig(dim: 5120, nLayers: 40, nHeads: 40).ffnHiddenSize == 13824)
        #expect(
            LlamaConfig(
                dim: 8192, nLayers: 80, nHeads: 64, nKVHeads: 8, multipleOf: 4096,
                ffnDimMultiplier: 1.3
            ).ffnHiddenSize == 28672)
        #expect(
            LlamaConfig(
                dim: 8192, nLayers: 48, nHeads: 64, nKVHeads: 8, multipleOf: 256,
                ffnDimMultiplier: 1.0
            ).ffnHiddenSize == 22016)
    }

    @Test func huggingFaceConfigRoundTripsAndRefusesWhatWeDoNotCompute() throws {
        let dir = try temporaryDirectory()
        let config = LlamaConfig(
            dim: 48, nLayers: 2, nHeads: 6, nKVHeads: 2, vocabSize: 100, ffnHiddenSize: 96,
            normEps: 1e-6, ropeTheta: 50000, maxSeqLen: 64)
        try HuggingFace.configJSON(config).write(to: URL(fileURLWithPath: dir + "/config.json"))
        #expect(try HuggingFace.readConfig(path: dir + "/config.json") == config)

        var json = try JSONSerialization.jsonObject(with: HuggingFace.configJSON(config)) as! [String: Any]
        json["tie_word_embeddings"] = true
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: dir + "/tied.json"))
        do {
            _ = try HuggingFace.readConfig(path: dir + "/tied.json")
            Issue.record("tied embeddings were accepted")
        } catch let error as ConfigError {
            #expect(error.field == "tie_word_embeddings" && error.file == dir + "/tied.json")
        }
        json["tie_word_embeddings"] = false
        json["rope_scaling"] = ["rope_type": "llama3", "factor": 8.0]
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: dir + "/scaled.json"))
        #expect(throws: ConfigError.self) { try HuggingFace.readConfig(path: dir + "/scaled.json") }
    }

    /// transformers 5 nests the rotary base in rope_parameters; 4.x puts it at the top.
    @Test func ropeThetaFromEitherSpelling() throws {
        let dir = try temporaryDirectory()
        let base: [String: Any] = [
            "model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 10,
        ]
        var nested = base
        nested["rope_parameters"] = ["rope_theta": 12345.0, "rope_type": "default"]
        var top = base
        top["rope_theta"] = 54321.0
        try JSONSerialization.data(withJSONObject: nested).write(to: URL(fileURLWithPath: dir + "/a.json"))
        try JSONSerialization.data(withJSONObject: top).write(to: URL(fileURLWithPath: dir + "/b.json"))
        #expect(try HuggingFace.readConfig(path: dir + "/a.json").ropeTheta == 12345)
        #expect(try HuggingFace.readConfig(path: dir + "/b.json").ropeTheta == 54321)
        #expect(try HuggingFace.readConfig(path: dir + "/b.json").nKVHeads == 4)
    }
}

@Suite struct ModelInputErrorTests {
    @Test func outOfRangeTokensAndTargetsAreNamed() throws {
        let model = try LlamaModel(
            config: LlamaConfig(
                dim: 8, nLayers: 1, nHeads: 2, vocabSize: 5, ffnHiddenSize: 8,
                maxSeqLen: 4))
        #expect(throws: ModelError.tokenOutOfRange(position: 1, token: 5, vocabSize: 5)) {
            try model.forward(tokens: [0, 5], targets: [1, 1], batch: 1, seqLen: 2)
        }
        #expect(throws: ModelError.targetOutOfRange(position: 0, target: -1, vocabSize: 5)) {
            try model.forward(tokens: [0, 1], targets: [-1, 1], batch: 1, seqLen: 2)
        }
        #expect(throws: ModelError.sequenceTooLong(seqLen: 8, maxSeqLen: 4)) {
            try model.forward(
                tokens: [Int32](repeating: 0, count: 8), targets: [Int32](repeating: 0, count: 8),
                batch: 1, seqLen: 8)
        }
    }

    @Test func allTargetsIgnoredGivesZeroLossAndNoGradient() throws {
        let model = try LlamaModel(
            config: LlamaConfig(
                dim: 8, nLayers: 1, nHeads: 2, vocabSize: 5, ffnHiddenSize: 8,
                maxSeqLen: 4))
        model.initialize(seed: 1)
        model.gradients.zero()
        let r = try model.forward(tokens: [0, 1], targets: [-100, -100], batch: 1, seqLen: 2)
        #expect(r.targetCount == 0 && r.meanLoss == 0)
        try model.backward(lossScale: 1)
        #expect(model.gradients.array.allSatisfy { $0 == 0 })
    }
}

@Suite struct NamedErrorTests {
    /// rope_scaling is refused under its own name; a sharded index that sends a tensor outside the directory is
    /// not followed.
    @Test func hubFilesNameWhatIsWrong() throws {
        let dir = try temporaryDirectory()
        let json: [String: Any] = [
            "model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 4, "vocab_size": 10, "rope_scaling": ["type": "linear", "factor": 2.0],
        ]
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: dir + "/c.json"))
        #expect { try HuggingFace.readConfig(path: dir + "/c.json") } throws: {
            ($0 as? ConfigError)?.field == "rope_scaling"
        }
        let config = LlamaConfig(dim: 8, nLayers: 1, nHeads: 2, vocabSize: 5, ffnHiddenSize: 8, maxSeqLen: 4)
        let layout = ParameterLayout(config: config)
        let map = Dictionary(uniqueKeysWithValues: layout.tensors.map { ($0.name, "../elsewhere.safetensors") })
        try JSONSerialization.data(withJSONObject: ["weight_map": map])
            .write(to: URL(fileURLWithPath: dir + "/model.safetensors.index.json"))
        #expect {
            try HuggingFace.loadWeights(directory: dir, layout: layout, into: FloatBuffer(count: layout.count))
        } throws: {
            "\($0)".contains("outside the model directory")
        }
    }
}
