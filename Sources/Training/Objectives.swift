// What a training stage optimises, behind one protocol, so that pretraining, supervised fine-tuning and
// reward models share the data-parallel loop (Trainer): each loads its slice of global batch k, says how many
// units the loss averages over (targets that count, or preference pairs), and runs micro-steps.
import Checkpoint
import Configuration
import Dataset
import Distributed
import Foundation
import Model
import Optim
import Support

public protocol TrainingObjective: AnyObject {
    var name: String { get }
    /// What one optimizer step processes, for the log.
    var batchDescription: String { get }
    /// Tokens processed per optimizer step over all ranks (for tokens/s and MFU).
    var tokensPerStep: Int { get }
    func accumulation(worldSize: Int, file: String?) throws -> Int
    /// Loads this rank's slice of global batch k; returns the local count of loss units.
    func load(step k: Int, rank: Int, worldSize: Int) throws -> Double
    /// Forward and backward of micro-step m with gradients scaled by `scale` (1 / global count); returns the
    /// summed (unscaled) loss. `gradientsReady` reports the primary model's finished gradients.
    func microStep(_ m: Int, models: ModelSet, scale: Float, gradientsReady: ((Int) -> Void)?) throws -> Double
    /// Where the data stands after `steps` optimizer steps (epochs per source), for the log; nil if nothing to say.
    func dataPosition(afterSteps steps: Int) -> String?
    /// Once, before the first step, when the models hold their starting (startStep 0) or resumed state: a stage
    /// that needs a pass over its data with the initial model (DPO's reference log-probs) makes it here, and may
    /// keep what it computed in `checkpointDirectory` for a resumed run. Every rank calls it.
    func begin(models: ModelSet, world: Communicator, startStep: Int, checkpointDirectory: String?) throws
}

extension TrainingObjective {
    public func dataPosition(afterSteps steps: Int) -> String? { nil }
    public func begin(models: ModelSet, world: Communicator, startStep: Int, checkpointDirectory: String?) throws {}

    /// A micro-step of a stage with one model.
    public func microStep(_ m: Int, model: LlamaModel, scale: Float, gradientsReady: ((Int) -> Void)?) throws -> Double
    {
        try microStep(m, models: ModelSet(primary: model), scale: scale, gradientsReady: gradientsReady)
    }
}

/// Next-token cross-entropy over a BatchSource: pretraining (shards or synthetic) and SFT (packed, masked).
public final class LanguageModelObjective: TrainingObjective {
    let source: BatchSource
    let settings: TrainSettings
    public let name: String
    private var tokens: [Int32] = []
    private var targets: [Int32] = []

    public init(source: BatchSource, settings: TrainSettings, name: String = "pretraining") {
        self.source = source
        self.settings = settings
        self.name = name
    }

    public var tokensPerStep: Int { settings.globalBatchSequences * settings.seqLen }
    public var batchDescription: String {
        "\(tokensPerStep) tokens (\(settings.globalBatchSequences) sequences × \(settings.seqLen))"
    }

    public func accumulation(worldSize: Int, file: String?) throws -> Int {
        try settings.accumulationSteps(worldSize: worldSize, file: file)
    }

    public func load(step k: Int, rank: Int, worldSize: Int) throws -> Double {
        (tokens, targets) = try source.batch(
            k, globalBatch: settings.globalBatchSequences, rank: rank, worldSize: worldSize)
        return Double(targets.reduce(0) { $0 + ($1 == LlamaModel.ignoreIndex ? 0 : 1) })
    }

    public func dataPosition(afterSteps steps: Int) -> String? {
        source.position(afterSequences: steps * settings.globalBatchSequences)
    }

    public func microStep(_ m: Int, models: ModelSet, scale: Float, gradientsReady: ((Int) -> Void)?) throws -> Double {
        let model = models.primary, n = settings.microBatch * settings.seqLen
        let range = (m * n)..<((m + 1) * n)
        let result = try model.forward(
            tokens: Array(tokens[range]), targets: Array(targets[range]),
            batch: settings.microBatch, seqLen: settings.seqLen)
        try model.backward(lossScale: scale, gradientsReady: gradientsReady)
        return result.lossSum
    }
}
