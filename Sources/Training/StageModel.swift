// StageModel: one model of a training stage as the trainer holds it, with what its role needs.
//
// A stage names its models (ModelSpec): the one it trains first (its primary, the run's `model` block), and
// any others: more that train (PPO's value model), frozen ones whose outputs feed the loss (a reference, a
// reward model, a distillation teacher). A trainable model has gradients, its own sharding and communication
// (the bucketed allreduce, or ShardedUnits, or the reduce-scatter of sharding `optimizer`), an AdamW over the
// range this rank updates and its own clipping; a frozen one is an inference model (no gradients, no
// moments), replicated or, under sharding `full`, gathered a unit at a time like a trained one.
// What this is not: the loop (TrainingStep.swift) or the checkpoint format (CheckpointStore).
import Checkpoint
import Configuration
import Distributed
import Foundation
import Kernels
import Model
import Optim
import Support

/// What a stage asks of one of its models.
public struct ModelSpec: Sendable {
    /// Its name in checkpoints, logs and the objective's ModelSet ("model" for the run's own).
    public var name: String
    public var config: LlamaConfig
    /// Trains (gradients, AdamW, clipping) or is frozen (its outputs are constants of the loss).
    public var trains: Bool
    public var sharding: ShardingMode
    public var recompute: Recompute
    /// Global-norm clipping threshold of this model's own gradients.
    public var gradClip: Double
    /// This model's learning rate as a multiple of the schedule's (PPO's value_lr / train.lr).
    public var learningRateRatio = 1.0
    public var adamw: AdamWSettings
    public var bucketMB: Double
    public var gradReduce: Precision
    /// Starting weights: a Hugging Face directory or one of our checkpoints; nil starts from the seed.
    public var initFrom: String?

    /// The run's own model: the config's model block, trained as its train block says.
    public static func primary(_ config: RunConfig) -> ModelSpec {
        let t = config.train
        return ModelSpec(
            name: "model", config: config.model, trains: true, sharding: t.sharding, recompute: t.recompute,
            gradClip: t.gradClip, adamw: t.adamw, bucketMB: t.bucketMB, gradReduce: t.gradReduce,
            initFrom: config.finetune?.initFrom)
    }

    /// A model whose outputs feed the loss and which never changes, from `initFrom`.
    public static func frozen(
        _ name: String, config: LlamaConfig, initFrom: String?, sharding: ShardingMode = .none
    ) -> ModelSpec {
        ModelSpec(
            name: name, config: config, trains: false, sharding: sharding == .full ? .full : .none, recompute: .none,
            gradClip: 0, adamw: AdamWSettings(), bucketMB: 25, gradReduce: .fp32, initFrom: initFrom)
    }

    /// What the ranks must agree on for this model.
    var agreementText: String {
        // Sorted keys: a dictionary's order differs between processes, and the ranks compare this text.
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let model = (try? encoder.encode(config)).map { String(decoding: $0, as: UTF8.self) } ?? "?"
        return
            "\(model) trains \(trains) sharding \(sharding.rawValue) recompute \(recompute.rawValue) clip \(gradClip) "
            + "adamw \(adamw.beta1)/\(adamw.beta2)/\(adamw.eps)/\(adamw.weightDecay) bucket \(bucketMB) reduce \(gradReduce.rawValue) "
            + "init \(initFrom ?? "seed") lr×\(learningRateRatio)"
    }
}

/// The models an objective's micro-step reads: the primary (trained first) and the others by name.
public struct ModelSet {
    public let primary: LlamaModel
    private let byName: [String: LlamaModel]

    public init(primary: LlamaModel, others: [String: LlamaModel] = [:]) {
        self.primary = primary
        byName = others
    }

    public subscript(_ name: String) -> LlamaModel {
        guard let model = byName[name] else { preconditionFailure("the stage has no model named \(name)") }
        return model
    }

    /// A model the stage may or may not have (PPO's safety reward model).
    public func optional(_ name: String) -> LlamaModel? { byName[name] }
}

public final class StageModel {
    public let spec: ModelSpec
    public let model: LlamaModel
    /// nil for a frozen model.
    public let optimizer: AdamW?
    /// Who owns which pieces: each unit split evenly over the ranks under sharding `gradients` and `full`,
    /// the whole buffer split evenly under `optimizer` (one collective over all of it is balanced already) and
    /// `none` (which uses it only to share the writing of checkpoints).
    let partition: UnitPartition
    /// The pieces this rank updates (everything without sharding).
    let owned: HeldPieces
    /// Sharding none: the gradient allreduce, bucketed (overlapped with backward for the primary).
    let buckets: BucketedAllreduce?
    /// Sharding gradients and full: the units' reduce-scatters and (full) gathers; for a frozen model under
    /// `full`, its gathers only.
    let units: ShardedUnits?
    /// Sharding optimizer: this rank's summed gradients, the reduce-scatter's target.
    let ownedGradients: FloatBuffer?

    public var trains: Bool { optimizer != nil }

    init(spec: ModelSpec, world: Communicator, threads: Int, precision: Precision, prefetch: Bool = true) throws {
        self.spec = spec
        let layout = ParameterLayout(config: spec.config)
        partition =
            spec.sharding == .gradients || spec.sharding == .full
            ? UnitPartition(units: layout.units, ranks: world.size)
            : .flat(count: layout.count, ranks: world.size)
        owned = spec.sharding == .none ? .whole(layout.count) : partition.held(rank: world.rank)
        let purpose: ModelPurpose = spec.trains ? .training(spec.recompute) : .inference
        switch (spec.sharding, spec.trains) {
        case (.full, _):
            model = try LlamaModel(
                config: spec.config, purpose: purpose, parameterPieces: owned,
                gradientPieces: spec.trains ? owned : .whole(0))
        case (.gradients, true): model = try LlamaModel(config: spec.config, purpose: purpose, gradientPieces: owned)
        default: model = try LlamaModel(config: spec.config, purpose: purpose)
        }
        optimizer = spec.trains ? AdamW(layout: model.layout, pieces: owned, settings: spec.adamw) : nil
        buckets =
            spec.trains && spec.sharding == .none
            ? BucketedAllreduce(
                communicator: world, buffer: model.gradients.pointer, count: model.gradients.count,
                bucketBytes: max(4, Int(spec.bucketMB * 1_048_576)), bf16: spec.gradReduce == .bf16)
            : nil
        units =
            spec.sharding == .full || (spec.trains && spec.sharding == .gradients)
            ? try ShardedUnits(
                model: model, world: world, partition: partition, shardsParameters: spec.sharding == .full,
                prefetch: prefetch)
            : nil
        model.unitWeights = units
        model.threads = threads
        model.precision = precision
        optimizer?.threads = threads
        ownedGradients = spec.trains && spec.sharding == .optimizer ? FloatBuffer(count: owned.count) : nil
    }

    /// A fresh start: the model's starting weights, or the seed's initialisation. Each rank reads or draws only
    /// what it holds, and nothing is broadcast: the values are the same on every rank and for any world size,
    /// which the trainer's agreement check proves right after.
    func initialize(seed: UInt64, log: (String) -> Void) throws {
        if let start = spec.initFrom {
            try loadInitialWeights(from: start, into: model, seed: seed, log: log)
        } else {
            model.initialize(seed: seed)
        }
    }

    func beginStep() {
        model.gradients.zero()
        units?.beginStep()
    }

    /// The step is dropped before its last micro-step (a preemption): once this returns nothing of it is in
    /// flight (a prefetch under `full` has finished); its gradients, never applied, are zeroed by the next
    /// beginStep. The parameters and the optimizer's moments were never touched.
    func abandonStep() { units?.invalidate() }

    /// After the micro-steps: the rest of the gradient communication. `overlapped` says the primary's buckets
    /// already started during the last backward; any other model's buckets are all reduced now.
    func finishReduction(world: Communicator, overlapped: Bool) throws -> (exposed: Double, communication: Double) {
        if let buckets {
            if !overlapped {
                buckets.begin()
                buckets.ready(from: 0)
            }
            return (try buckets.finish(), buckets.communicationSeconds)
        }
        if let units { return (units.exposedSeconds, units.communicationSeconds) }
        if let ownedGradients {
            let start = monotonicSeconds()
            try world.reduceScatterPieces(
                model.gradients.pointer, ownedGradients.pointer, count: model.layout.count,
                pieces: partition.pieces(ofUnit: 0))
            let seconds = monotonicSeconds() - start
            return (seconds, seconds)
        }
        return (0, 0)
    }

    /// The gradients this rank updates with: all of them, or the sum of its own range.
    var updateGradients: UnsafeMutablePointer<Float> { ownedGradients?.pointer ?? model.gradients.pointer }

    /// The global norm of this model's summed gradients (under sharding: each rank's own range, one allreduce).
    func gradientNorm(world: Communicator, threads: Int) throws -> Double {
        let squares = GradientClipping.sumOfSquares(updateGradients, count: owned.count, threads: threads)
        return (spec.sharding == .none ? squares : try world.allreduceSum(squares)).squareRoot()
    }

    /// Clips to spec.gradClip and takes the AdamW step on this rank's range, then brings every rank's
    /// parameters up to date; returns the seconds of that communication.
    func update(norm: Double, learningRate: Double, world: Communicator, threads: Int) throws -> Double {
        guard let optimizer else { return 0 }
        GradientClipping.scale(
            updateGradients, count: owned.count, norm: norm, maxNorm: spec.gradClip, threads: threads)
        // Sharding gradients and optimizer keep every parameter and update their own pieces of them.
        optimizer.update(
            parameters: model.parameters.pointer, gradients: updateGradients, learningRate: Float(learningRate),
            parametersAreWhole: spec.sharding == .gradients || spec.sharding == .optimizer)
        switch spec.sharding {
        case .optimizer, .gradients:
            let start = monotonicSeconds()
            for (u, unit) in partition.units.enumerated() {
                try world.allgatherPieces(
                    model.parameters.pointer + unit.lowerBound, count: unit.count, pieces: partition.pieces(ofUnit: u))
            }
            return monotonicSeconds() - start
        case .full:
            units?.invalidate()
            return 0
        case .none:
            return 0
        }
    }

    /// A checksum whose min and max over ranks must coincide (nil under sharding `full`, where no rank holds
    /// what another does).
    func checkParametersAgree(_ when: String, world: Communicator) throws {
        guard spec.sharding != .full else { return }
        let checksum = lm_sum_squares(model.parameters.pointer, model.parameters.count)
        let (low, high) = (try world.allreduceMin(checksum), try world.allreduceMax(checksum))
        guard low == high else {
            throw TrainingError(
                "parameters of \(spec.name) differ across ranks \(when): checksums from \(low) to \(high)")
        }
    }

    /// Writes the model in Hugging Face layout to `directory`, every rank its own pieces (the partition's: a
    /// flat range when replicated, ⌈S/N⌉ of every unit when sharded), with no gather. Every rank must call it.
    func export(
        to directory: String, dtype: SafeTensorsDType, maxShardBytes: Int, world: Communicator,
        extras: (String) throws -> Void
    ) throws {
        let mine = partition.held(rank: world.rank).ranges.map { range in
            (range, UnsafePointer(model.parameters.pointer + model.parameterPieces.local(range.lowerBound)!))
        }
        try exportHuggingFace(
            config: spec.config, layout: model.layout, ranges: mine, world: world, directory: directory, dtype: dtype,
            maxShardBytes: maxShardBytes, extras: extras)
    }

    var checkpointed: CheckpointedModel {
        CheckpointedModel(name: spec.name, model: model, optimizer: optimizer, partition: partition)
    }
}
