// Trainer: the data-parallel training loop, the same code for one rank or many, and for every stage
// (pretraining, supervised fine-tuning, reward models: they differ only in their TrainingObjective).
//
// One optimizer step k:
//  1. Take this rank's slice of global batch k; count the targets that count, and sum the count over ranks.
//  2. For each micro-step: forward, then backward with loss scale 1 / (global count), gradients adding up.
//     On the last micro-step backward hands finished gradient buckets to the allreduce thread as it goes.
//  3. Wait for the last buckets (the exposed communication), sum the loss over ranks.
//  4. A NaN or Inf loss or gradient norm stops the run (or skips the step); otherwise clip to the global
//     norm and take an AdamW step at the scheduled learning rate. Every rank computes the same update.
import Dataset
import Distributed
import Checkpoint
import Configuration
import Foundation
import Support
import Kernels
import Model
import Optim
import Tokenizer

public struct TrainingError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// One step's numbers, as the progress line and the JSON Lines metrics show them.
public struct StepMetrics: Codable, Sendable {
    public var step: Int
    public var steps: Int
    public var loss: Double
    public var lr: Double
    public var gradNorm: Double
    public var tokens: Int
    public var tokensPerS: Double
    public var mfu: Double
    public var elapsedS: Double
    public var etaS: Double
    public var computeS: Double
    public var exposedCommS: Double
    public var commS: Double
    public var optimizerS: Double
    /// Wall time of the whole step: data, compute, communication, optimizer.
    public var stepS: Double
    public var skipped: Bool

    enum CodingKeys: String, CodingKey {
        case step, steps, loss, lr, gradNorm = "grad_norm", tokens, tokensPerS = "tokens_per_s", mfu
        case elapsedS = "elapsed_s", etaS = "eta_s", computeS = "compute_s", exposedCommS = "exposed_comm_s"
        case commS = "comm_s", optimizerS = "optimizer_s", stepS = "step_s", skipped
    }
}

public struct TrainOptions {
    /// Where the final model (Hugging Face layout, with the tokenizer) is written; nil writes nothing.
    public var outputDirectory: String?
    public var metricsPath: String?
    public var logEvery = 1
    public var log: @Sendable (String) -> Void = { print($0) }
    /// Sharded checkpoints go here (nil: none are written and nothing is resumed).
    public var checkpointDirectory: String?
    /// Save every this many steps (0: only at the end, on preemption and at --stop-after).
    public var checkpointEvery = 0
    public var keepCheckpoints = 2
    public var backgroundSave = false
    public var resume = ResumeMode.auto
    /// Stop (with a checkpoint) after this step of the schedule (or after the first step run, when resuming
    /// beyond it), as if preempted there.
    public var stopAfter: Int?
    /// Seconds a collective may wait before the watchdog aborts the job (0 disables it).
    public var collectiveTimeout: TimeInterval = 300

    public init() {}
}

public final class Trainer {
    public let config: RunConfig
    public let world: Communicator
    public let model: LlamaModel
    public let optimizer: AdamW
    public let accumulation: Int
    public let objective: TrainingObjective
    public let schedule: CosineSchedule
    let buckets: BucketedAllreduce
    let options: TrainOptions
    let sgemmGflops: Double
    let checkpoints: CheckpointStore?
    let watchdog: Watchdog?
    let preemption: PreemptionSignal?
    /// The first step to run: 0, or the step of the checkpoint resumed from.
    public private(set) var startStep = 0
    public private(set) var history: [StepMetrics] = []

    public init(config: RunConfig, configPath: String? = nil, world: Communicator, options: TrainOptions = TrainOptions(),
                objective: TrainingObjective? = nil) throws {
        self.config = config
        self.world = world
        self.options = options
        let t = config.train
        schedule = CosineSchedule(peak: t.learningRate, warmupSteps: t.warmupSteps, totalSteps: t.steps, minRatio: t.minLRRatio)
        model = try LlamaModel(config: config.model)
        optimizer = AdamW(layout: model.layout, settings: t.adamw)
        if let objective {
            self.objective = objective
        } else if let data = t.data {
            guard let tokenizerPath = t.tokenizer else {
                throw ConfigError(file: configPath, field: "train.tokenizer", message: "is required with train.data, to check the shards were made by it")
            }
            guard let bytes = FileManager.default.contents(atPath: tokenizerPath) else {
                throw ConfigError(file: configPath, field: "train.tokenizer", message: "cannot read \(tokenizerPath)")
            }
            let tokenizer = try Tokenizer(path: tokenizerPath)
            guard tokenizer.vocabSize <= config.model.vocabSize else {
                throw ConfigError(file: configPath, field: "model.vocab_size", message: "\(config.model.vocabSize) is smaller than the tokenizer's \(tokenizer.vocabSize) pieces")
            }
            self.objective = LanguageModelObjective(source: try MixtureLoader(directory: data, tokenizerHash: SHA256.hex([UInt8](bytes)),
                                                                              seqLen: t.seqLen, weights: t.dataWeights, seed: t.seed),
                                                    settings: t)
        } else {
            self.objective = LanguageModelObjective(source: SyntheticTokens(vocabSize: config.model.vocabSize, seqLen: t.seqLen, seed: t.seed,
                                                                            ignoreFraction: t.syntheticIgnoreFraction),
                                                    settings: t)
        }
        accumulation = try self.objective.accumulation(worldSize: world.size, file: configPath)
        buckets = BucketedAllreduce(communicator: world, buffer: model.gradients.pointer, count: model.gradients.count,
                                    bucketBytes: Int(t.bucketMB * 1_048_576))
        sgemmGflops = try world.allreduceSum(MatmulRate.sgemm(size: 512)) / Double(world.size)
        watchdog = try Watchdog.start(on: world, timeout: options.collectiveTimeout)
        if let directory = options.checkpointDirectory {
            let store = try CheckpointStore(directory: directory, keep: options.keepCheckpoints, background: options.backgroundSave,
                                            world: world, log: options.log)
            checkpoints = store
            preemption = PreemptionSignal()
            if let manifest = try store.resume(options.resume, model: model, optimizer: optimizer, config: config) {
                startStep = manifest.step
            }
        } else {
            checkpoints = nil
            preemption = nil
        }
        // A fresh run starts from the seed or from finetune.init_from; a resumed one already holds its state.
        // Rank 0's copy is broadcast anyway, and the agreement is checked below.
        if startStep == 0 {
            model.initialize(seed: t.seed)
            if let start = config.finetune?.initFrom {
                try loadInitialWeights(from: start, into: model, world: world, log: world.isRoot ? options.log : { _ in })
            }
            try world.broadcast(model.parameters.pointer, count: model.parameters.count)
        }
        try checkParametersAgree(startStep > 0 ? "after resuming" : "after initialisation")
    }

    /// Proves every rank holds the same parameters: a checksum's min and max over ranks must coincide.
    public func checkParametersAgree(_ when: String) throws {
        let checksum = lm_sum_squares(model.parameters.pointer, model.parameters.count)
        let (low, high) = (try world.allreduceMin(checksum), try world.allreduceMax(checksum))
        guard low == high else {
            throw TrainingError("parameters differ across ranks \(when): checksums from \(low) to \(high)")
        }
    }

    /// Runs steps [first, config.train.steps) and returns their metrics.
    @discardableResult
    public func run() throws -> [StepMetrics] {
        let first = startStep
        let t = config.train
        let tokensPerStep = objective.tokensPerStep
        let flopsPerToken = model.flopsPerToken(seqLen: t.seqLen)
        let metricsFile = try options.metricsPath.map { try MetricsWriter(path: $0, enabled: world.isRoot) }
        if world.isRoot {
            options.log("\(objective.name): \(model.layout.count) parameters on \(world.size) rank(s): \(t.steps) steps of \(objective.batchDescription), micro-batch \(t.microBatch) × \(accumulation) accumulation step(s) per rank, \(buckets.bucketRanges.count) allreduce bucket(s)")
        }
        let start = Date()
        var smoothedStep: Double?
        var k = first
        while k < t.steps {
            defer { k += 1 }
            watchdog?.step = k + 1
            let stepStart = Date()
            // The loss is normalised by the step's global count of what counts (targets, or pairs).
            let localCount = try objective.load(step: k, rank: world.rank, worldSize: world.size)
            let globalCount = try world.allreduceSum(localCount)
            let scale = Float(globalCount > 0 ? 1 / globalCount : 0)

            model.gradients.zero()
            var lossSum = 0.0
            for m in 0..<accumulation {
                if m == accumulation - 1 {
                    buckets.begin()
                    lossSum += try objective.microStep(m, model: model, scale: scale) { [buckets] watermark in buckets.ready(from: watermark) }
                } else {
                    lossSum += try objective.microStep(m, model: model, scale: scale, gradientsReady: nil)
                }
            }
            let computeEnd = Date()
            let exposed = try buckets.finish()
            let loss = try world.allreduceSum(lossSum) / max(globalCount, 1)
            let optimizerStart = Date()
            let norm = GradientClipping.sumOfSquares(model.gradients).squareRoot()
            let lr = schedule.learningRate(step: k)
            var skipped = false
            if !loss.isFinite || !norm.isFinite {
                let what = "step \(k + 1): loss \(loss), gradient norm \(norm)"
                guard t.onNonFinite == .skip else {
                    throw TrainingError("non-finite \(what); parameters were not updated. Lower train.lr, or set train.on_nonfinite to \"skip\"")
                }
                skipped = true
                if world.isRoot { options.log("skipping \(what)") }
            } else {
                GradientClipping.scale(model.gradients, norm: norm, maxNorm: t.gradClip)
                optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: Float(lr))
            }
            let end = Date()
            let stepSeconds = end.timeIntervalSince(stepStart)
            // The first step pays for planning the arena and warming caches; it does not enter the average.
            if k > first { smoothedStep = smoothedStep.map { 0.9 * $0 + 0.1 * stepSeconds } ?? stepSeconds }
            let perStep = smoothedStep ?? stepSeconds
            let tokensPerS = Double(tokensPerStep) / perStep
            let metrics = StepMetrics(
                step: k + 1, steps: t.steps, loss: loss, lr: lr, gradNorm: norm, tokens: (k + 1) * tokensPerStep,
                tokensPerS: tokensPerS, mfu: flopsPerToken * tokensPerS / Double(world.size) / (sgemmGflops * 1e9),
                elapsedS: end.timeIntervalSince(start), etaS: perStep * Double(t.steps - k - 1),
                computeS: computeEnd.timeIntervalSince(stepStart), exposedCommS: exposed, commS: buckets.communicationSeconds,
                optimizerS: end.timeIntervalSince(optimizerStart), stepS: stepSeconds, skipped: skipped)
            history.append(metrics)
            try metricsFile?.append(metrics)
            if world.isRoot && ((k + 1) % options.logEvery == 0 || k == first || k + 1 == t.steps) {
                options.log(Self.progressLine(metrics))
            }
            if let store = checkpoints {
                // Every rank must agree to stop: a signal may reach the ranks at different steps.
                let signalled = try world.allreduceMax(preemption!.received ? 1 : 0) > 0
                let stopping = signalled || options.stopAfter.map { k + 1 >= $0 } == true
                if stopping || k + 1 == t.steps || (options.checkpointEvery > 0 && (k + 1) % options.checkpointEvery == 0) {
                    try store.save(step: k + 1, tokensSeen: (k + 1) * tokensPerStep, model: model, optimizer: optimizer, config: config)
                }
                if stopping {
                    try store.waitForPending()
                    if world.isRoot {
                        options.log(signalled ? "preempted (\(preemption!.name)): checkpoint of step \(k + 1) committed; relaunch to resume"
                                              : "stopped after step \(k + 1) as asked; relaunch to resume")
                    }
                    break
                }
            }
        }
        try checkpoints?.waitForPending()
        try checkParametersAgree("at the end of training")
        if world.isRoot, let position = objective.dataPosition(afterSteps: k) { options.log(position) }
        if let out = options.outputDirectory, world.isRoot { try saveModel(to: out) }
        return history
    }

    /// Writes the model in Hugging Face layout, with the tokenizer beside it when the run has one.
    public func saveModel(to directory: String) throws {
        try HuggingFace.save(config: model.config, layout: model.layout, parameters: model.parameters, directory: directory)
        if let tokenizer = config.train.tokenizer, let bytes = FileManager.default.contents(atPath: tokenizer) {
            try AtomicFile.write(bytes, to: directory + "/tokenizer.model")
        }
    }

    /// step 12/200 | loss 5.4321 | lr 3.00e-04 | grad norm 1.234 | 12,345 tok/s | MFU 0.61 | 1m02s elapsed, ETA 3m10s
    public static func progressLine(_ m: StepMetrics) -> String {
        let width = String(m.steps).count
        return String(format: "step %*d/%d | loss %.4f | lr %.2e | grad norm %.3f | %@ tok/s | MFU %.2f | comm %.0f ms exposed | %@ elapsed, ETA %@%@",
                      width, m.step, m.steps, m.loss, m.lr, m.gradNorm, groupedThousands(m.tokensPerS), m.mfu,
                      m.exposedCommS * 1e3, duration(m.elapsedS), duration(m.etaS), m.skipped ? " | SKIPPED" : "")
    }

    static func duration(_ s: Double) -> String {
        let total = Int(s.rounded())
        return total >= 3600 ? String(format: "%dh%02dm", total / 3600, total % 3600 / 60)
            : String(format: "%dm%02ds", total / 60, total % 60)
    }

    static func groupedThousands(_ x: Double) -> String {
        let digits = String(Int(x.rounded()))
        var out = ""
        for (i, c) in digits.reversed().enumerated() {
            if i > 0 && i % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return String(out.reversed())
    }
}

/// JSON Lines metrics, one object per step, flushed as written (rank 0 only).
final class MetricsWriter {
    private let handle: FileHandle?
    private let encoder = JSONEncoder()

    init(path: String, enabled: Bool) throws {
        encoder.outputFormatting = [.sortedKeys]
        guard enabled else { handle = nil; return }
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        guard FileManager.default.createFile(atPath: path, contents: nil), let h = FileHandle(forWritingAtPath: path) else {
            throw FileError(path: path, message: "cannot create the metrics file")
        }
        handle = h
    }

    func append(_ metrics: StepMetrics) throws {
        guard let handle else { return }
        try handle.write(contentsOf: encoder.encode(metrics) + Data("\n".utf8))
    }
}

/// SIGTERM and SIGUSR1 (what Slurm sends before preemption with --signal=USR1@120) become a flag the loop
/// reads at the end of each step, so the step finishes and a checkpoint is committed before exiting.
final class PreemptionSignal: @unchecked Sendable {
    private let lock = NSLock()
    private var signal: Int32?
    private var sources: [DispatchSourceSignal] = []

    init() {
        for number in [SIGTERM, SIGUSR1] {
            Foundation.signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [weak self] in
                self?.lock.lock()
                self?.signal = number
                self?.lock.unlock()
            }
            source.resume()
            sources.append(source)
        }
    }

    var received: Bool { lock.lock(); defer { lock.unlock() }; return signal != nil }
    var name: String { lock.lock(); defer { lock.unlock() }; return signal == SIGUSR1 ? "SIGUSR1" : "SIGTERM" }
}
