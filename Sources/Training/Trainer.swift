// Trainer: the data-parallel training loop, the same code for one rank or many, and for every stage
// (pretraining, supervised fine-tuning, reward models: they differ only in their TrainingObjective).
//
// Start-up, before anything large is allocated:
//  1. Validate the effective config (after flags and stage edits) and check it fits in memory.
//  2. Prove every rank holds the same config, flags, tokenizer and data (one gather; the differences named).
//  3. Check that the outputs (--out, --metrics, the checkpoint directory) can be written.
// Then per optimizer step (TrainingStep.swift): load the step's batch, micro-steps with the allreduce
// overlapped (or, under train.sharding, the reduce-scatters and gathers of ShardedUnits), clip, AdamW on the
// range this rank owns; the ProgressReporter prints and records it; the CheckpointPolicy saves or stops.
// The final model is written to --out only when the schedule completes (gathered on rank 0 when sharded).
import Checkpoint
import Configuration
import Dataset
import Distributed
import Foundation
import Kernels
import Model
import Optim
import Support
import Tokenizer

public struct TrainingError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The trainer's options beside the config: outputs, checkpoints, threads. Each default is the declaration's
/// in TrainOptionsSettings.swift, the one place the command line's flags and help read it too.
public struct TrainOptions {
    /// Where the final model (Hugging Face layout, with the tokenizer) is written; nil writes nothing.
    public var outputDirectory: String? = Self.declared(\.outputDirectory)
    /// --out's weights: fp32, bf16 or fp16, split above maxShardSize ("5GB", "900MB") into Hugging Face's
    /// sharded layout.
    public var outputDType: String = Self.declared(\.outputDType)
    public var maxShardSize: String = Self.declared(\.maxShardSize)
    public var metricsPath: String? = Self.declared(\.metricsPath)
    public var logEvery: Int = Self.declared(\.logEvery)
    /// The validation loss every this many steps (0: at the end only), where train.eval_data or eval_holdout
    /// gives windows to read.
    public var evalEvery: Int = Self.declared(\.evalEvery)
    public var log: @Sendable (String) -> Void = { print($0) }
    /// Sharded checkpoints go here (nil: none are written and nothing is resumed).
    public var checkpointDirectory: String? = Self.declared(\.checkpointDirectory)
    /// Save every this many steps (0: only at the end, on preemption and at --stop-after).
    public var checkpointEvery: Int = Self.declared(\.checkpointEvery)
    /// Also save once this many minutes have passed since the last save (0: by step count only).
    public var checkpointEveryMinutes: Double = Self.declared(\.checkpointEveryMinutes)
    /// Seconds the scheduler's signal comes before its kill (0: unknown), to warn when it is too short.
    public var signalLead: Double = Self.declared(\.signalLead)
    public var keepCheckpoints: Int = Self.declared(\.keepCheckpoints)
    public var backgroundSave: Bool = Self.declared(\.backgroundSave)
    /// Sharding full: gather each unit on the compute thread when needed, not ahead on a communication thread.
    public var noPrefetch: Bool = Self.declared(\.noPrefetch)
    public var resume = ResumeMode(Self.declared(\.resumeArgument))
    /// Stop (with a checkpoint) after this step of the schedule (or after the first step run, when resuming
    /// beyond it), as if preempted there.
    public var stopAfter: Int? = Self.declared(\.stopAfter)
    /// Threads of this rank (--threads): OpenBLAS's, and the attention kernels' units.
    public var threads: Int = Self.declared(\.threads)
    /// Seconds a collective may wait before the watchdog aborts the job (0 disables it).
    public var collectiveTimeout: TimeInterval = Self.declared(\.collectiveTimeout)

    public init() {}

    static func declared<V>(_ keyPath: KeyPath<TrainOptions, V>) -> V { settings.defaultValue(keyPath) }
}

/// How a run ended: the schedule completed, or it stopped early (preemption, --stop-after) with its
/// checkpoint committed.
public struct TrainingOutcome: Sendable {
    public let completed: Bool
    public let history: [StepMetrics]
}

/// What a stage is to the trainer, in one value: its name (checkpoints and the command), how a step runs (the
/// objective: what a micro-step computes from which models), and which models it needs beyond the run's own
/// (ModelSpec.primary(config), always first and trained), in the order they are checkpointed.
public struct StagePlan {
    public var stage: TrainingStage
    public var objective: TrainingObjective?
    public var extraModels: [ModelSpec]

    public init(_ stage: TrainingStage, objective: TrainingObjective? = nil, extraModels: [ModelSpec] = []) {
        (self.stage, self.objective, self.extraModels) = (stage, objective, extraModels)
    }
}

public final class Trainer {
    public let config: RunConfig
    public let stage: TrainingStage
    public let world: Communicator
    /// The stage's models: the primary first (it trains), then the others the stage asked for.
    public let models: [StageModel]
    public let accumulation: Int
    public let objective: TrainingObjective
    public let schedule: CosineSchedule
    let options: TrainOptions
    let reporter: ProgressReporter
    let policy: CheckpointPolicy
    /// How long micro-steps and saves take, what rank 0's clock says is due.
    let clock: RunClock
    /// Why the latest step was dropped part-way (TrainingStep).
    var stopReason: String?
    /// The newest step saved or being saved: the one resumed from, at first.
    var lastSavedStep: Int?
    let checkpoints: CheckpointStore?
    let watchdog: Watchdog?
    /// The first step to run: 0, or the step of the checkpoint resumed from.
    public let startStep: Int
    public private(set) var history: [StepMetrics] = []

    /// The primary model and its optimizer.
    public var model: LlamaModel { models[0].model }
    public var optimizer: AdamW { models[0].optimizer! }
    /// What the objective's micro-steps read.
    let modelSet: ModelSet
    /// The windows of the validation loss (pretraining with train.eval_data or eval_holdout), else nil.
    public let validation: ValidationSet?

    /// A stage of one model: `stage`'s name, `objective` (nil: next-token prediction on train.data, or
    /// synthetic tokens), and any `extraModels` beyond the run's own (see StagePlan).
    public convenience init(
        config: RunConfig, configPath: String? = nil, world: Communicator, options: TrainOptions = TrainOptions(),
        stage: TrainingStage = .pretrain, objective: TrainingObjective? = nil, extraModels: [ModelSpec] = []
    ) throws {
        try self.init(
            config: config, configPath: configPath, world: world, options: options,
            plan: StagePlan(stage, objective: objective, extraModels: extraModels))
    }

    public init(
        config: RunConfig, configPath: String? = nil, world: Communicator, options: TrainOptions = TrainOptions(),
        plan: StagePlan
    ) throws {
        let (stage, objective, extraModels) = (plan.stage, plan.objective, plan.extraModels)
        self.config = config
        self.stage = stage
        self.world = world
        self.options = options
        let t = config.train
        try config.validate(file: configPath)
        let specs = [ModelSpec.primary(config)] + extraModels
        guard Set(specs.map(\.name)).count == specs.count else {
            throw TrainingError("the stage names a model twice: \(specs.map(\.name)); each model needs its own name")
        }
        // Names become shard file names and manifest entries: checked before anything is written.
        if let bad = extraModels.first(where: { !CheckpointManifest.isModelName($0.name) }) {
            throw TrainingError(
                "model name '\(bad.name)' is not usable: lower-case letters, digits, '_' and '-', at most 64")
        }
        for spec in extraModels { try spec.config.validate(file: configPath) }
        try Self.checkFitsInMemory(
            config: config, extraModels: extraModels, ranks: world.size, ranksPerNode: try world.ranksOnThisNode(),
            checkpoints: options.checkpointDirectory != nil, file: configPath)
        if objective == nil || objective is LanguageModelObjective, !config.model.heads.contains(.lm) {
            throw ConfigError(
                file: configPath, field: "model.heads",
                message: "is \(config.model.heads.map(\.rawValue)); next-token training needs lm_head among them")
        }
        let tokenizerBytes = try t.tokenizer.map { path in
            guard let bytes = FileManager.default.contents(atPath: path) else {
                throw ConfigError(file: configPath, field: "train.tokenizer", message: "cannot read \(path)")
            }
            return bytes
        }
        let precision = try PrecisionChoice.resolve(t.precision)
        // The resolved precision too: nodes of different CPUs could resolve the default differently.
        try world.checkAgreement(
            "configuration",
            fields: config.fingerprintFields
                + Self.agreementFields(
                    options: options, stage: stage, tokenizer: tokenizerBytes, data: t.data, finetune: config.finetune)
                + [("precision in use", precision.precision.rawValue)]
                + specs.dropFirst().map { ("model \($0.name)", $0.agreementText) })
        try Self.checkWritable(options: options, world: world)
        try Self.checkOutputsSpareInputs(
            config: config, configPath: configPath, options: options, extraModels: extraModels)

        schedule = CosineSchedule(
            peak: t.learningRate, warmupSteps: t.warmupSteps, totalSteps: t.steps, minRatio: t.minLRRatio)
        var validation: ValidationSet?
        if (t.evalData != nil || t.evalHoldout > 0) && (stage != .pretrain || objective != nil) {
            throw ConfigError(
                file: configPath, field: t.evalData != nil ? "train.eval_data" : "train.eval_holdout",
                message:
                    "gives pretraining's validation loss; the fine-tuning stages evaluate on finetune.eval_data")
        }
        if let objective {
            self.objective = objective
        } else if let data = t.data, let tokenizerPath = t.tokenizer, let tokenizerBytes {
            let tokenizer = try Tokenizer(path: tokenizerPath)
            guard tokenizer.vocabSize <= config.model.vocabSize else {
                throw ConfigError(
                    file: configPath, field: "model.vocab_size",
                    message: "\(config.model.vocabSize) is smaller than the tokenizer's \(tokenizer.vocabSize) pieces")
            }
            let hash = SHA256.hex([UInt8](tokenizerBytes))
            let loader = try MixtureLoader(
                directory: data, tokenizerHash: hash, seqLen: t.seqLen, weights: t.dataWeights, seed: t.seed,
                vocabSize: config.model.vocabSize, holdout: t.evalHoldout)
            self.objective = LanguageModelObjective(source: loader, settings: t)
            if let evalData = t.evalData {
                validation = try ValidationSet.directory(
                    evalData, tokenizerHash: hash, seqLen: t.seqLen, vocabSize: config.model.vocabSize,
                    limit: t.evalWindows)
            } else if t.evalHoldout > 0 {
                validation = ValidationSet.heldOut(by: loader, limit: t.evalWindows)
            }
        } else {
            self.objective = LanguageModelObjective(
                source: SyntheticTokens(
                    vocabSize: config.model.vocabSize, seqLen: t.seqLen, seed: t.seed,
                    ignoreFraction: t.syntheticIgnoreFraction),
                settings: t)
        }
        self.validation = validation
        accumulation = try self.objective.accumulation(worldSize: world.size, file: configPath)
        models = try specs.map {
            try StageModel(
                spec: $0, world: world, threads: options.threads, precision: precision.precision,
                prefetch: !options.noPrefetch)
        }
        modelSet = ModelSet(
            primary: models[0].model,
            others: Dictionary(uniqueKeysWithValues: models.dropFirst().map { ($0.spec.name, $0.model) }))
        lm_set_matmul_threads(Int32(options.threads))
        if world.isRoot { options.log(precision.message) }
        watchdog = try Watchdog.start(on: world, timeout: options.collectiveTimeout)
        var resumedStep = 0
        if let directory = options.checkpointDirectory {
            let store = try CheckpointStore(
                directory: directory, stage: stage, keep: options.keepCheckpoints,
                background: options.backgroundSave, world: world, log: options.log)
            checkpoints = store
            if let manifest = try store.resume(options.resume, models: models.map(\.checkpointed), config: config) {
                resumedStep = manifest.step
                // A resumed run continues with the weights it started from: say so where init_from names others.
                for m in models.dropFirst() where !m.trains && world.isRoot {
                    if let start = m.spec.initFrom {
                        options.log(
                            "\(m.spec.name): restored from the checkpoint at step \(manifest.step); its init_from (\(start)) is not read again, since the run continues with the weights it started from"
                        )
                    }
                }
            }
        } else {
            checkpoints = nil
        }
        startStep = resumedStep
        // The checkpoint resumed from counts as saved only if it is in --checkpoint-dir (a --resume PATH may name
        // one elsewhere): a stop before the next step then has nothing to write.
        lastSavedStep =
            checkpoints.map {
                FileManager.default.fileExists(
                    atPath: $0.directory + "/" + CheckpointManifest.directoryName(step: resumedStep) + "/manifest.json")
            } == true && resumedStep > 0 ? resumedStep : nil
        policy = CheckpointPolicy(every: options.checkpointEvery, stopAfter: options.stopAfter, steps: t.steps)
        clock = RunClock(
            checkpointEveryMinutes: options.checkpointEveryMinutes, signalLead: options.signalLead,
            environment: ProcessInfo.processInfo.environment, isRoot: world.isRoot)
        // A fresh run starts from the seed or from each model's init_from; a resumed one already holds its state.
        // The agreement is checked below.
        if startStep == 0 {
            for m in models { try m.initialize(seed: t.seed, log: world.isRoot ? options.log : { _ in }) }
        }
        // MFU's denominator: the rate of the precision in use, measured here (sgemm, or oneDNN's bf16 primitive).
        let primary = models[0].model
        let matmulGflops =
            try world.allreduceSum(try MatmulRate.rate(primary.precision, m: 512, k: 512, oc: 512)) / Double(world.size)
        reporter = try ProgressReporter(
            steps: t.steps, firstStep: startStep, tokensPerStep: self.objective.tokensPerStep,
            flopsPerToken: primary.flopsPerToken(seqLen: t.seqLen), ranks: world.size,
            matmulGflops: matmulGflops, logEvery: options.logEvery, metricsPath: options.metricsPath,
            isRoot: world.isRoot, log: options.log)
        try checkParametersAgree(startStep > 0 ? "after resuming" : "after initialisation")
        try self.objective.begin(
            models: modelSet, world: world, startStep: startStep, checkpointDirectory: options.checkpointDirectory)
    }

    /// Refuses a stage whose models do not fit this machine's memory together: the run's own model as the
    /// config plans it, each other trained model the same way with its own sharding, each frozen one its
    /// parameters (its part under sharding `full`) and a forward-only arena.
    /// The node's memory is divided among the ranks on it; saving checkpoints adds each save's copy of a shard.
    static func checkFitsInMemory(
        config: RunConfig, extraModels: [ModelSpec], ranks: Int, ranksPerNode: Int = 1, checkpoints: Bool = false,
        file: String?
    ) throws {
        guard !extraModels.isEmpty else {
            return try config.checkFitsInMemory(
                ranks: ranks, ranksPerNode: ranksPerNode, checkpoints: checkpoints, file: file)
        }
        let parts = memoryParts(config: config, extraModels: extraModels, ranks: ranks, checkpoints: checkpoints)
        let node = Int(clamping: ProcessInfo.processInfo.physicalMemory)
        let machine = node / max(ranksPerNode, 1)
        func gib(_ bytes: Int) -> String { String(format: "%.1f GiB", Double(bytes) / 1_073_741_824) }
        let share = ranksPerNode > 1 ? " for each of the \(ranksPerNode) ranks on this node (\(gib(node)) in all)" : ""
        let sizes = parts.map { $0.1 }
        guard sizes.allSatisfy({ $0 != nil }), let need = CheckedSize.sum(sizes.map { $0! }) else {
            throw ConfigError(
                file: file, field: "-", message: "the stage's models need more memory per rank than can be counted")
        }
        guard need <= machine else {
            let each = parts.map { "\($0.0) \(gib($0.1!))" }.joined(separator: ", ")
            throw ConfigError(
                file: file, field: "-",
                message:
                    "the stage's models need \(gib(need)) per rank (\(each)) but this machine has \(gib(machine))\(share); shard or recompute them, or use smaller ones"
            )
        }
    }

    /// Each of a stage's models' bytes per rank (nil: too large to count): a trained one as the config plans
    /// the run's own, with its own sharding; a frozen one its parameters (its part under `full`) and a
    /// forward-only arena.
    public static func memoryParts(
        config: RunConfig, extraModels: [ModelSpec], ranks: Int, checkpoints: Bool
    ) -> [(name: String, bytes: Int?)] {
        var parts: [(String, Int?)] = [("model", config.trainingBytesPerRank(ranks: ranks, checkpoints: checkpoints))]
        for spec in extraModels {
            var own = config
            own.model = spec.config
            (own.train.sharding, own.train.recompute) = (spec.sharding, spec.recompute)
            if spec.trains {
                parts.append((spec.name, own.trainingBytesPerRank(ranks: ranks, checkpoints: checkpoints)))
            } else {
                let count = spec.config.parameterCount.map { spec.sharding == .full ? ($0 + ranks - 1) / ranks : $0 }
                let arena = ActivationArena.Plan(
                    config: spec.config, batch: config.train.microBatch, seqLen: config.train.seqLen,
                    purpose: .inference
                ).byteCount
                parts.append((spec.name, count.map { 4 * $0 + arena }))
            }
        }
        return parts
    }

    /// The run's other inputs that every rank must share: the trainer's flags, the tokenizer's and the data's hashes.
    static func agreementFields(
        options: TrainOptions, stage: TrainingStage, tokenizer: Data?, data: String?,
        finetune: FineTuneSettings?
    ) -> [(name: String, value: String)] {
        // A file's size and the SHA-256 of its first and last MiB: the whole of a small file, and for a large
        // one (fine-tuning data read once across the ranks) what tells copies apart without every rank
        // reading all of it.
        func hash(_ path: String?) -> String {
            guard let path else { return "absent" }
            let name = FileManager.default.fileExists(atPath: path + "/index.json") ? path + "/index.json" : path
            guard let file = try? FileReader(path: name) else { return "unreadable" }
            let edge = 1 << 20
            let head = (try? file.sha256(of: 0..<min(file.size, edge))) ?? nil
            let tail = (try? file.sha256(of: max(file.size - edge, 0)..<file.size)) ?? nil
            return "\(file.size) bytes, \(head ?? "unreadable") … \(tail ?? "unreadable")"
        }
        return [
            ("stage", stage.rawValue),
            ("--checkpoint-dir", options.checkpointDirectory ?? "absent"),
            // Every rank writes its part of --out into files rank 0 lays out: they must agree on all three.
            ("--out", options.outputDirectory ?? "absent"), ("--out-dtype", options.outputDType),
            ("--max-shard-size", options.maxShardSize),
            ("--checkpoint-every", "\(options.checkpointEvery)"),
            ("--checkpoint-every-minutes", "\(options.checkpointEveryMinutes)"),
            ("--keep", "\(options.keepCheckpoints)"),
            ("--background-save", "\(options.backgroundSave)"),
            ("--resume", "\(options.resume)"),
            ("--stop-after", options.stopAfter.map(String.init) ?? "absent"),
            ("--collective-timeout", "\(options.collectiveTimeout)"),
            ("tokenizer (SHA-256)", tokenizer.map { SHA256.hex([UInt8]($0)) } ?? "absent"),
            ("train.data index.json (size, SHA-256 of its ends)", hash(data)),
            ("finetune.data (size, SHA-256 of its ends)", hash(finetune?.data)),
            ("finetune.eval_data (size, SHA-256 of its ends)", hash(finetune?.evalData)),
        ]
    }

    /// The run's outputs never overwrite its inputs (PathClash): --out's files and --metrics against the
    /// config, the tokenizer, the prepared data, the fine-tuning data and every model's init_from.
    static func checkOutputsSpareInputs(
        config: RunConfig, configPath: String?, options: TrainOptions,
        extraModels: [ModelSpec]
    ) throws {
        var inputs: [(flag: String, path: String)] = []
        if let configPath { inputs.append(("--config", configPath)) }
        if let tokenizer = config.train.tokenizer { inputs.append(("train.tokenizer", tokenizer)) }
        if let data = config.train.data { inputs.append(("train.data", data)) }
        if let f = config.finetune {
            inputs.append(("finetune.data", f.data))
            if let eval = f.evalData { inputs.append(("finetune.eval_data", eval)) }
            if let start = f.initFrom { inputs.append(("finetune.init_from", start)) }
        }
        for spec in extraModels { if let start = spec.initFrom { inputs.append(("\(spec.name)'s init_from", start)) } }
        var outputs: [PathClash.Output] = []
        if let out = options.outputDirectory {
            let files =
                HuggingFace.writtenFiles + ["tokenizer.model", "eval-scores.svg"] + Tokenizer.huggingFaceFileNames
            outputs.append(.directory("--out", out, writing: files))
        }
        if let metrics = options.metricsPath { outputs.append(.file("--metrics", metrics)) }
        try PathClash.check(outputs: outputs, inputs: inputs)
    }

    /// Fails before step 1 when an output cannot be written (the metrics file and checkpoint directory are
    /// opened where they are made).
    static func checkWritable(options: TrainOptions, world: Communicator) throws {
        guard SafeTensorsDType.shardBytes(options.maxShardSize) != nil else {
            throw TrainingError(
                "--max-shard-size: '\(options.maxShardSize)' is not a size; give it as 5GB, 900MB, 2GiB or bytes")
        }
        guard world.isRoot, let out = options.outputDirectory else { return }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: out, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw FileError(
                path: out,
                message:
                    "--out names a file; it must be a directory (it receives config.json, model.safetensors, tokenizer.model)"
            )
        }
        do {
            try AtomicFile.checkWritable(directory: out)
            AtomicFile.removeStaleTemporaries(in: out, log: options.log)
        } catch let error as FileError {
            throw FileError(
                path: out,
                message: "--out cannot be written (\(error.message)); the model would be lost at the end of training")
        }
    }

    /// Proves every rank holds the same parameters of every model: a checksum's min and max over ranks must
    /// coincide. (Under sharding `full` no rank holds what another does, so there is nothing to compare.)
    public func checkParametersAgree(_ when: String) throws {
        for m in models { try m.checkParametersAgree(when, world: world) }
    }

    /// Runs steps [startStep, config.train.steps), or until preempted or --stop-after.
    public func run() throws -> TrainingOutcome {
        let t = config.train
        // Start-up, loading and data included: the slowest rank's, so what the job waited for.
        let startup = try world.allreduceMax(secondsSinceProcessStart() ?? 0)
        if world.isRoot {
            options.log(
                "\(objective.name): \(model.layout.count) parameters on \(world.size) rank(s): \(t.steps) steps of \(objective.batchDescription), micro-batch \(t.microBatch) × \(accumulation) accumulation step(s) per rank, "
                    + (models[0].buckets.map { "\($0.bucketRanges.count) allreduce bucket(s)" }
                        ?? "sharding \(t.sharding.rawValue)")
                    + String(format: "; ready after %.2f s", startup))
            for m in models.dropFirst() {
                options.log(
                    "  and \(m.spec.name): \(m.model.layout.count) parameters, \(m.trains ? "trained" : "frozen"), sharding \(m.spec.sharding.rawValue)"
                )
            }
        }
        var completed = true
        var k = startStep
        // A signal during start-up: nothing has changed since the checkpoint resumed from (or the start).
        if let stop = try clock.agree(world, stepEnd: false, log: options.log).stop {
            try stopWithoutStep(stop, at: k)
            completed = false
        }
        while completed && k < t.steps {
            watchdog?.step = k + 1
            guard let metrics = try step(k) else {
                // Dropped part-way: step k's state is what the parameters and moments hold.
                try stopWithoutStep(stopReason ?? "stopped", at: k)
                completed = false
                break
            }
            history.append(metrics)
            k += 1
            let (stop, due) = try clock.agree(world, stepEnd: true, log: options.log)
            guard let store = checkpoints else {
                if let stop { try stopWithoutStep(stop, at: k) }
                continue
            }
            recordCommit(store)
            let decision = policy.decision(afterStep: k, stop: stop, due: due)
            if decision == .continueTraining { continue }
            try save(step: k, to: store)
            if case let .saveAndStop(reason) = decision {
                try finishStop(reason, at: k, store: store)
                completed = false
                break
            }
        }
        try checkpoints?.waitForPending()
        checkpoints?.releaseDirectory()  // the run is done with it: a relaunch may take it now
        try checkParametersAgree("at the end of training")
        if world.isRoot, let position = objective.dataPosition(afterSteps: k) { options.log(position) }
        if completed, let out = options.outputDirectory { try saveModel(to: out) }
        return TrainingOutcome(completed: completed, history: history)
    }

    /// Saves the state after step k (the store waits for an earlier background save first).
    func save(step k: Int, to store: CheckpointStore) throws {
        clock.saveStarted()
        lastSavedStep = k
        try store.save(
            step: k, tokensSeen: k * objective.tokensPerStep, models: models.map(\.checkpointed), config: config)
        clock.saveReturned()
        recordCommit(store)
    }

    /// A save that has committed since the last look (a foreground one at once, a background one when it
    /// finishes) gives the margin its time.
    func recordCommit(_ store: CheckpointStore) {
        if let seconds = store.takeCommitSeconds() { clock.recordSave(seconds: seconds, log: options.log) }
    }

    /// The ranks agreed to stop with no step finished since step k: its checkpoint is committed (written now,
    /// unless it is the one resumed from or already saved), then the run ends like any stop. Without a
    /// checkpoint directory the run ends with an error saying nothing was saved.
    func stopWithoutStep(_ reason: String, at k: Int) throws {
        guard let store = checkpoints else {
            throw TrainingError("\(reason) at step \(k): no --checkpoint-dir, so the run ends without a checkpoint")
        }
        if k > 0 && lastSavedStep != k { try save(step: k, to: store) }
        try finishStop(reason, at: k, store: store)
    }

    /// Waits for the stop's checkpoint to commit and says so.
    func finishStop(_ reason: String, at k: Int, store: CheckpointStore) throws {
        try store.waitForPending()
        recordCommit(store)
        guard world.isRoot else { return }
        let what =
            k == 0
            ? "no step was taken, so there is nothing to save"
            : "checkpoint of step \(k) committed" + (k == startStep ? " (the one resumed from)" : "")
        options.log("\(reason): \(what); the schedule has \(config.train.steps - k) steps left, relaunch to resume")
    }

    /// Writes the trained model in Hugging Face layout, with the run's tokenizer beside it when it has one:
    /// every rank writes the parameters it owns, and the directory appears whole (StageModel.export).
    func saveModel(to directory: String) throws {
        let dtype = SafeTensorsDType(option: options.outputDType)
        let tokenizer = config.train.tokenizer.flatMap { path in
            FileManager.default.contents(atPath: path).map { (path, $0) }
        }
        try models[0].export(
            to: directory, dtype: dtype, maxShardBytes: SafeTensorsDType.shardBytes(options.maxShardSize) ?? Int.max,
            world: world
        ) { staging in
            guard let (path, bytes) = tokenizer else { return }
            try Tokenizer.writeHuggingFace(
                bytes, source: path, to: staging, maxLength: config.model.maxSeqLen,
                chatTemplate: config.finetune?.template.huggingFaceJinja)
        }
    }
}
