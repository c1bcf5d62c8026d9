// finetune.init_from against the model block: fields that change what the weights compute without changing a
// shape are cross-checked and every mismatch named; a starting model holding a NaN is refused naming the
// tensor, before anything is built from it.
import Foundation
import Model
import Support
import Testing
import Training

@Suite struct InitialWeightsTests {
    static let shape = LlamaConfig(dim: 16, nLayers: 1, nHeads: 2, vocabSize: 32, ffnHiddenSize: 32, maxSeqLen: 32)

    static func saved(_ config: LlamaConfig, poison: Bool = false) throws -> String {
        let model = try LlamaModel(config: config, purpose: .inference)
        model.initialize(seed: 4)
        if poison { model.parameters[model.layout.layer(0, .up).offset + 5] = .nan }
        let dir = NSTemporaryDirectory() + "init-\(UUID().uuidString)"
        try HuggingFace.save(config: config, layout: model.layout, parameters: model.parameters, directory: dir)
        return dir
    }

    @Test func mismatchesAreNamed() throws {
        var other = Self.shape
        (other.ropeTheta, other.maxSeqLen) = (500_000, 8)
        let dir = try Self.saved(other)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let model = try LlamaModel(config: Self.shape)
        #expect { try loadInitialWeights(from: dir, into: model, log: { _ in }) } throws: { error in
            let text = "\(error)"
            return text.contains("rope_theta 500000") && text.contains("max_seq_len 8") && text.contains(dir)
        }
        let same = try Self.saved(Self.shape)
        defer { try? FileManager.default.removeItem(atPath: same) }
        try loadInitialWeights(from: same, into: model, log: { _ in })
    }

    @Test func nonFiniteWeightsAreRefusedByTensor() throws {
        let dir = try Self.saved(Self.shape, poison: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect { try loadInitialWeights(from: dir, into: try LlamaModel(config: Self.shape), log: { _ in }) } throws: {
            "\($0)".contains("model.layers.0.mlp.up_proj.weight") && "\($0)".contains("nan")
                && "\($0)".contains("index 5")
        }
    }
}
