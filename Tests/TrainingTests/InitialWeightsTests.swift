// finetune.init_from against the model block: fields that change what the weights compute without changing a
// shape are cross-checked and every mismatch named; a starting model holding a NaN is refused naming the
// tensor, before anything is built from it.
import Configuration
import Distributed
import Foundation
import Model
import Support
import Testing

@testable import Training

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
        #expect { try loadInitialWeights(from: dir, into: model, seed: 1, log: { _ in }) } throws: { error in
            let text = "\(error)"
            return text.contains("rope_theta 500000") && text.contains("max_seq_len 8") && text.contains(dir)
        }
        let same = try Self.saved(Self.shape)
        defer { try? FileManager.default.removeItem(atPath: same) }
        try loadInitialWeights(from: same, into: model, seed: 1, log: { _ in })
    }

    @Test func nonFiniteWeightsAreRefusedByTensor() throws {
        let dir = try Self.saved(Self.shape, poison: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect {
            try loadInitialWeights(from: dir, into: try LlamaModel(config: Self.shape), seed: 1, log: { _ in })
        } throws: {
            "\($0)".contains("model.layers.0.mlp.up_proj.weight") && "\($0)".contains("nan")
                && "\($0)".contains("index 5")
        }
    }

    /// A reward model starting from a language model under sharding `full` gets the seed's score head, as it
    /// does replicated (the whole copy it was read into was left at zero there).
    @Test func aFreshHeadStartsAlikeInEveryMode() throws {
        let dir = try Self.saved(Self.shape)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var reward = Self.shape
        reward.heads = [.score]
        let world = try Communicator.world()
        func started(_ sharding: ShardingMode) throws -> [Float] {
            let m = try StageModel(
                spec: .frozen("reward", config: reward, initFrom: dir, sharding: sharding), world: world, threads: 1,
                precision: .fp32)
            try m.initialize(seed: 9, log: { _ in })
            return m.model.parameters.array
        }
        let (none, full) = (try started(.none), try started(.full))
        let head = ParameterLayout(config: reward).heads[0].tensor
        #expect(none[head.offset..<(head.offset + head.count)].contains { $0 != 0 }, "the score head is drawn")
        let headFull = full[head.offset..<(head.offset + head.count)]
        #expect(none.elementsEqual(full), "sharding full starts where none does; its head: \(headFull.prefix(4))…")
    }
}
