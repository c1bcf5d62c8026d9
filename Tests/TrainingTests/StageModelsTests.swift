// A stage of two models in one job: a student that trains and a frozen teacher whose logits feed the loss
// (a toy distillation: the student's cross-entropy against the teacher's softmax). Gradients flow only into
// the student; checkpoint and resume of both are bitwise the same as training straight through.
import Checkpoint
import Configuration
import Distributed
import Foundation
import Model
import Support
import TestSupport
import Testing
import Training

/// L = Σ over positions of −Σ_v softmax(teacher)_v · log softmax(student)_v, so ∂L/∂student = softmax(student)
/// − softmax(teacher) per position (times the loss scale).
final class DistillationObjective: TrainingObjective {
    let source: SyntheticTokens
    let settings: TrainSettings
    var tokens: [Int32] = []
    let name = "distillation"

    init(settings: TrainSettings, vocabSize: Int) {
        self.settings = settings
        source = SyntheticTokens(vocabSize: vocabSize, seqLen: settings.seqLen, seed: settings.seed)
    }

    var tokensPerStep: Int { settings.globalBatchSequences * settings.seqLen }
    var batchDescription: String { "\(settings.globalBatchSequences) sequences" }
    func accumulation(worldSize: Int, file: String?) throws -> Int {
        try settings.accumulationSteps(worldSize: worldSize, file: file)
    }

    func load(step k: Int, rank: Int, worldSize: Int) throws -> Double {
        tokens = try source.batch(k, globalBatch: settings.globalBatchSequences, rank: rank, worldSize: worldSize)
            .tokens
        return Double(tokens.count)
    }

    func microStep(_ m: Int, models: ModelSet, scale: Float, gradientsReady: ((Int) -> Void)?) throws -> Double {
        let (B, T) = (settings.microBatch, settings.seqLen)
        let batch = Array(tokens[(m * B * T)..<((m + 1) * B * T)])
        let none = [Int32](repeating: LlamaModel.ignoreIndex, count: batch.count)
        let teacher = models["teacher"], student = models.primary
        _ = try teacher.forward(tokens: batch, targets: none, batch: B, seqLen: T)
        let p = Self.softmaxRows(Array(teacher.outputs(of: .lm)), width: teacher.config.vocabSize)
        _ = try student.forward(tokens: batch, targets: none, batch: B, seqLen: T)
        let q = Self.softmaxRows(Array(student.outputs(of: .lm)), width: student.config.vocabSize)
        let loss = zip(p, q).reduce(0.0) { $0 - Double($1.0) * log(Double(max($1.1, 1e-30))) }
        try student.backward(
            heads: [.lm: .given({ d in for i in d.indices { d[i] = (q[i] - p[i]) * scale } })],
            gradientsReady: gradientsReady)
        return loss
    }

    static func softmaxRows(_ x: [Float], width: Int) -> [Float] {
        stride(from: 0, to: x.count, by: width).flatMap { start -> [Float] in
            let row = x[start..<(start + width)], m = row.max()!
            let e = row.map { exp($0 - m) }, s = e.reduce(0, +)
            return e.map { $0 / s }
        }
    }
}

@Suite struct StageModelsTests {
    static let vocab = 40

    static func config() -> RunConfig {
        var t = TrainSettings()
        (t.seqLen, t.microBatch, t.globalBatchTokens, t.steps, t.learningRate, t.warmupSteps) = (
            8, 2, 8 * 4, 4, 3e-3, 1
        )
        t.seed = 11
        return RunConfig(
            model: LlamaConfig(dim: 16, nLayers: 1, nHeads: 2, vocabSize: vocab, ffnHiddenSize: 32, maxSeqLen: 8),
            train: t)
    }

    /// A teacher of another shape, written as a Hugging Face directory: the frozen model's init_from.
    static func teacher() throws -> (ModelSpec, [Float]) {
        let shape = LlamaConfig(
            dim: 24, nLayers: 2, nHeads: 3, nKVHeads: 1, vocabSize: vocab, ffnHiddenSize: 40, maxSeqLen: 8)
        let model = try LlamaModel(config: shape, purpose: .inference)
        model.initialize(seed: 99, std: 0.5)
        let dir = NSTemporaryDirectory() + "teacher-\(UUID().uuidString)"
        try HuggingFace.save(config: shape, layout: model.layout, parameters: model.parameters, directory: dir)
        return (ModelSpec.frozen("teacher", config: shape, initFrom: dir), model.parameters.array)
    }

    static func trainer(
        _ teacher: ModelSpec, checkpoints: String? = nil, stopAfter: Int? = nil,
        log: @escaping @Sendable (String) -> Void = { _ in }
    ) throws -> Trainer {
        var options = TrainOptions()
        options.log = log
        options.checkpointDirectory = checkpoints
        options.stopAfter = stopAfter
        let config = Self.config()
        // The stage as one value: how a step runs, and the frozen teacher beside the run's own model.
        let plan = StagePlan(
            .pretrain, objective: DistillationObjective(settings: config.train, vocabSize: vocab),
            extraModels: [teacher])
        return try Trainer(config: config, world: try Communicator.world(), options: options, plan: plan)
    }

    @Test func gradientsFlowOnlyIntoTheTrainedModel() throws {
        let (spec, teacherWeights) = try Self.teacher()
        defer { try? FileManager.default.removeItem(atPath: spec.initFrom!) }
        let trainer = try Self.trainer(spec)
        let student = trainer.models[0], teacher = trainer.models[1]
        #expect(student.trains && !teacher.trains && teacher.optimizer == nil)
        #expect(teacher.model.gradients.count == 0, "a frozen model holds no gradient buffer")
        #expect(teacher.model.parameters.array == teacherWeights, "the teacher starts from its init_from")
        let before = student.model.parameters.array
        let history = try trainer.run().history
        #expect(history.count == 4 && history.allSatisfy { $0.loss.isFinite && $0.gradNorm > 0 })
        #expect(
            history.last!.loss < history.first!.loss, "the student moves towards the teacher: \(history.map(\.loss))")
        #expect(teacher.model.parameters.array == teacherWeights, "the frozen teacher never changes")
        #expect(maxDifference(student.model.parameters.array, before) > 0, "the student trains")
    }

    @Test func checkpointAndResumeOfBothAreBitwise() throws {
        let (spec, teacherWeights) = try Self.teacher()
        let root = NSTemporaryDirectory() + "stage-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let straight = try Self.trainer(spec, checkpoints: root + "/straight")
        _ = try straight.run()

        let first = try Self.trainer(spec, checkpoints: root + "/split", stopAfter: 2)
        #expect(try first.run().completed == false)
        let manifest = try readManifest(root + "/split/" + CheckpointManifest.directoryName(step: 2))
        #expect(
            manifest.modelName == "model" && manifest.models?.map(\.name) == ["teacher"]
                && manifest.models?.first?.sections == 1)
        #expect(manifest.models?.first?.adamStep == nil && manifest.adamStep == 2)
        // The teacher's init_from is gone: the resumed run must take it from the checkpoint.
        try FileManager.default.removeItem(atPath: spec.initFrom!)
        let said = LogLines()
        let resumed = try Self.trainer(spec, checkpoints: root + "/split", log: said.append)
        #expect(resumed.startStep == 2)
        #expect(
            said.lines.contains { $0.contains("teacher: restored from the checkpoint") && $0.contains(spec.initFrom!) },
            "a frozen model's init_from not read again is said: \(said.lines)")
        #expect(resumed.model.parameters.array == first.model.parameters.array, "student parameters as saved")
        #expect(resumed.optimizer.m.array == first.optimizer.m.array, "student m as saved")
        _ = try resumed.run()
        #expect(resumed.models[1].model.parameters.array == teacherWeights)
        #expect(
            maxDifference(resumed.model.parameters.array, straight.model.parameters.array) == 0, "student parameters")
        #expect(
            resumed.optimizer.m.array == straight.optimizer.m.array
                && resumed.optimizer.v.array == straight.optimizer.v.array,
            "student moments")
        #expect(resumed.optimizer.step == straight.optimizer.step)
    }

    /// A stage is refused before anything is written when a model's name cannot be a file name, when
    /// next-token training has no lm_head, or when its models together do not fit this machine.
    @Test func badStagesAreRefusedUpFront() throws {
        let (spec, _) = try Self.teacher()
        defer { try? FileManager.default.removeItem(atPath: spec.initFrom!) }
        var options = TrainOptions()
        options.log = { _ in }
        let world = try Communicator.world()
        var named = spec
        named.name = "../Teacher"
        #expect { try Self.trainer(named) } throws: { "\($0)".contains("../Teacher") }
        var scorer = Self.config()
        scorer.model.heads = [.score]
        #expect { try Trainer(config: scorer, world: world, options: options) } throws: {
            ($0 as? ConfigError)?.field == "model.heads" && "\($0)".contains("lm_head")
        }
        let huge = LlamaConfig(dim: 8192, nLayers: 80, nHeads: 64, nKVHeads: 8, ffnHiddenSize: 28672, maxSeqLen: 8)
        #expect { try Self.trainer(ModelSpec.frozen("giant", config: huge, initFrom: nil)) } throws: {
            "\($0)".contains("giant") && "\($0)".contains("this machine has")
        }
    }
}

/// Log lines collected by a test.
final class LogLines: @unchecked Sendable {
    private(set) var lines: [String] = []
    func append(_ line: String) { lines.append(line) }
}
