// What a training stage optimises, behind one protocol, so that pretraining, supervised fine-tuning and
// reward models share the data-parallel loop (Trainer): each loads its slice of global batch k, says how many
// units the loss averages over (targets that count, or preference pairs), and runs micro-steps.
import Checkpoint
import Configuration
import Foundation
import Support
import Dataset
import Distributed
import Model
import Optim

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
    /// summed (unscaled) loss.
    func microStep(_ m: Int, model: LlamaModel, scale: Float, gradientsReady: ((Int) -> Void)?) throws -> Double
    /// Where the data stands after `steps` optimizer steps (epochs per source), for the log; nil if nothing to say.
    func dataPosition(afterSteps steps: Int) -> String?
}

extension TrainingObjective {
    public func dataPosition(afterSteps steps: Int) -> String? { nil }
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
    public var batchDescription: String { "\(tokensPerStep) tokens (\(settings.globalBatchSequences) sequences × \(settings.seqLen))" }

    public func accumulation(worldSize: Int, file: String?) throws -> Int {
        try settings.accumulationSteps(worldSize: worldSize, file: file)
    }

    public func load(step k: Int, rank: Int, worldSize: Int) throws -> Double {
        (tokens, targets) = try source.batch(k, globalBatch: settings.globalBatchSequences, rank: rank, worldSize: worldSize)
        return Double(targets.reduce(0) { $0 + ($1 == LlamaModel.ignoreIndex ? 0 : 1) })
    }

    public func dataPosition(afterSteps steps: Int) -> String? {
        source.position(afterSequences: steps * settings.globalBatchSequences)
    }

    public func microStep(_ m: Int, model: LlamaModel, scale: Float, gradientsReady: ((Int) -> Void)?) throws -> Double {
        let n = settings.microBatch * settings.seqLen
        let range = (m * n)..<((m + 1) * n)
        let result = try model.forward(tokens: Array(tokens[range]), targets: Array(targets[range]),
                                       batch: settings.microBatch, seqLen: settings.seqLen)
        model.backward(lossScale: scale, gradientsReady: gradientsReady)
        return result.lossSum
    }
}

/// Copies a starting model's tensors into `model` by name and shape: from a Hugging Face directory or one of
/// our checkpoints (step directory with manifest.json). A reward model may start from a language model: its
/// scalar head (score.weight) then keeps its fresh initialisation.
public func loadInitialWeights(from path: String, into model: LlamaModel, world: Communicator, log: (String) -> Void) throws {
    let source: LlamaModel
    if FileManager.default.fileExists(atPath: path + "/manifest.json") {
        let manifest = try readManifest(path)
        source = try LlamaModel(config: manifest.config.model)
        let store = try CheckpointStore(directory: (path as NSString).deletingLastPathComponent, keep: 2, background: false,
                                        world: world, log: { _ in })
        _ = try store.resume(.path(path), model: source, optimizer: AdamW(layout: source.layout), config: manifest.config)
    } else if FileManager.default.fileExists(atPath: path + "/config.json") {
        source = try HuggingFace.loadModel(directory: path)
    } else {
        throw TrainingError("\(path): neither a checkpoint (manifest.json) nor a Hugging Face directory (config.json)")
    }
    var fresh: [String] = []
    for spec in model.layout.tensors {
        if let from = source.layout.spec(named: spec.name), from.shape == spec.shape {
            model.parameters.pointer.advanced(by: spec.offset).update(from: source.parameters.pointer + from.offset, count: spec.count)
        } else if spec.offset == model.layout.lmHead.offset && model.config.rewardHead {
            fresh.append(spec.name)
        } else {
            let found = source.layout.spec(named: spec.name).map { "has shape \($0.shape)" } ?? "is missing"
            throw TrainingError("\(path): tensor \(spec.name) \(found), this model needs \(spec.shape); does finetune.init_from match the model block?")
        }
    }
    log("initialised from \(path)\(fresh.isEmpty ? "" : "; \(fresh.joined(separator: ", ")) freshly initialised")")
}
