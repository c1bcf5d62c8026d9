// RunConfig: one JSON file that says what to train and how: {"model": {...}, "train": {...}}.
//
// The model block is LlamaConfig's own keys; the train block holds the batch shape and seed now, and grows
// with the training loop. Unknown keys are refused, so a typo never silently falls back to a default.
import Foundation
import Model
import Optim
import Support

/// Sharded data parallelism (ZeRO's stages, FSDP): what each rank keeps of the 16 bytes per parameter.
public enum ShardingMode: String, Codable, CaseIterable, Sendable {
    /// Replicated: every rank holds all parameters, gradients and AdamW moments; gradients are allreduced.
    case none
    /// ZeRO-1: each rank keeps the AdamW moments of its own range; gradients are reduce-scattered to their
    /// owners, each rank updates its range, and the parameters are allgathered.
    case optimizer
    /// ZeRO-2: also only the owned gradient range persists: each unit's gradients are reduce-scattered right
    /// after its backward, every micro-step.
    case gradients
    /// ZeRO-3 / FSDP: parameters too; each unit is allgathered before its forward and backward (the next one
    /// prefetched on a communication thread) and released after.
    case full
}

public struct TrainSettings: Codable, Equatable, Sendable {
    public enum NonFinitePolicy: String, Codable, Sendable { case stop, skip }

    /// Tokens per sequence. Llama 2 trains at 4096; the small configs use less to fit 2 cores.
    public var seqLen = 256
    /// Sequences per rank per micro-step (what fits in memory).
    public var microBatch = 4
    /// Seeds initialisation and the data order.
    public var seed: UInt64 = 1337
    /// Tokens per optimizer step over all ranks and micro-steps: Llama 2's 4M = 1024 sequences of 4096.
    public var globalBatchTokens = 4_194_304
    /// Optimizer steps of the whole run (the schedule's length).
    public var steps = 1000
    /// Peak learning rate: 3e-4 for 7B and 13B, 1.5e-4 for 34B and 70B (Llama 2, Table 1).
    public var learningRate = 3e-4
    /// Linear warm-up length, then cosine decay to minLRRatio × peak at the last step (Llama 2 §2.2).
    public var warmupSteps = 2000
    public var minLRRatio = 0.1
    /// Global gradient-norm clipping threshold.
    public var gradClip = 1.0
    public var adamw = AdamWSettings()
    /// Allreduce bucket size; PyTorch DDP's default bucket_cap_mb is 25.
    public var bucketMB = 25.0
    /// Activation recomputation: `none` keeps every block's activations; `layer` keeps only each block's
    /// input and recomputes the block just before its backward (about 1.3× the compute, a fraction of the
    /// memory: what 7B–70B at 4096 tokens need).
    public var recompute = Recompute.none
    /// What each rank keeps of the parameters, gradients and moments (see ShardingMode).
    public var sharding = ShardingMode.none
    /// The matmuls' precision; absent: bf16 where the CPU runs it natively, else fp32 (see PrecisionChoice).
    public var precision: Precision?
    /// The gradient allreduce's wire format: fp32, or bf16 for half the bytes (sharding none only).
    public var gradReduce = Precision.fp32
    /// A NaN or Inf loss or gradient norm stops the run, or skips the step without updating.
    public var onNonFinite = NonFinitePolicy.stop
    /// A directory written by `llama-train prepare`; without one, synthetic tokens (benchmarks, tests).
    public var data: String?
    /// Mixture weights per source name (default 1: proportional to tokens).
    public var dataWeights: [String: Double] = [:]
    /// The tokenizer the data was prepared with (its hash must match the shards); copied next to the model.
    public var tokenizer: String?
    /// Synthetic data only: the fraction of targets set to the ignore index, to exercise masked averaging.
    public var syntheticIgnoreFraction = 0.0

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case seqLen = "seq_len", microBatch = "micro_batch", seed, globalBatchTokens = "global_batch_tokens", steps
        case learningRate = "lr", warmupSteps = "warmup_steps", minLRRatio = "min_lr_ratio", gradClip = "grad_clip"
        case beta1, beta2, eps, weightDecay = "weight_decay", bucketMB = "bucket_mb", onNonFinite = "on_nonfinite", recompute, sharding, precision
        case gradReduce = "grad_reduce"
        case data, dataWeights = "data_weights", tokenizer, syntheticIgnoreFraction = "synthetic_ignore_fraction"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = TrainSettings()
        seqLen = try c.decodeIfPresent(Int.self, forKey: .seqLen) ?? d.seqLen
        microBatch = try c.decodeIfPresent(Int.self, forKey: .microBatch) ?? d.microBatch
        // Decoded by hand: Foundation reports a negative UInt64 as "not valid JSON" with no field.
        if let value = try? c.decodeIfPresent(UInt64.self, forKey: .seed) {
            seed = value
        } else if c.contains(.seed) {
            throw DecodingError.dataCorruptedError(forKey: .seed, in: c, debugDescription: "must be an integer in 0...2^64-1")
        } else {
            seed = d.seed
        }
        globalBatchTokens = try c.decodeIfPresent(Int.self, forKey: .globalBatchTokens) ?? d.globalBatchTokens
        steps = try c.decodeIfPresent(Int.self, forKey: .steps) ?? d.steps
        learningRate = try c.decodeIfPresent(Double.self, forKey: .learningRate) ?? d.learningRate
        warmupSteps = try c.decodeIfPresent(Int.self, forKey: .warmupSteps) ?? d.warmupSteps
        minLRRatio = try c.decodeIfPresent(Double.self, forKey: .minLRRatio) ?? d.minLRRatio
        gradClip = try c.decodeIfPresent(Double.self, forKey: .gradClip) ?? d.gradClip
        adamw.beta1 = try c.decodeIfPresent(Float.self, forKey: .beta1) ?? d.adamw.beta1
        adamw.beta2 = try c.decodeIfPresent(Float.self, forKey: .beta2) ?? d.adamw.beta2
        adamw.eps = try c.decodeIfPresent(Float.self, forKey: .eps) ?? d.adamw.eps
        adamw.weightDecay = try c.decodeIfPresent(Float.self, forKey: .weightDecay) ?? d.adamw.weightDecay
        bucketMB = try c.decodeIfPresent(Double.self, forKey: .bucketMB) ?? d.bucketMB
        onNonFinite = try c.decodeIfPresent(NonFinitePolicy.self, forKey: .onNonFinite) ?? d.onNonFinite
        recompute = try c.decodeIfPresent(Recompute.self, forKey: .recompute) ?? d.recompute
        sharding = try c.decodeIfPresent(ShardingMode.self, forKey: .sharding) ?? d.sharding
        precision = try c.decodeIfPresent(Precision.self, forKey: .precision)
        gradReduce = try c.decodeIfPresent(Precision.self, forKey: .gradReduce) ?? d.gradReduce
        data = try c.decodeIfPresent(String.self, forKey: .data)
        dataWeights = try c.decodeIfPresent([String: Double].self, forKey: .dataWeights) ?? [:]
        tokenizer = try c.decodeIfPresent(String.self, forKey: .tokenizer)
        syntheticIgnoreFraction = try c.decodeIfPresent(Double.self, forKey: .syntheticIgnoreFraction) ?? 0
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(seqLen, forKey: .seqLen)
        try c.encode(microBatch, forKey: .microBatch)
        try c.encode(seed, forKey: .seed)
        try c.encode(globalBatchTokens, forKey: .globalBatchTokens)
        try c.encode(steps, forKey: .steps)
        try c.encode(learningRate, forKey: .learningRate)
        try c.encode(warmupSteps, forKey: .warmupSteps)
        try c.encode(minLRRatio, forKey: .minLRRatio)
        try c.encode(gradClip, forKey: .gradClip)
        try c.encode(adamw.beta1, forKey: .beta1)
        try c.encode(adamw.beta2, forKey: .beta2)
        try c.encode(adamw.eps, forKey: .eps)
        try c.encode(adamw.weightDecay, forKey: .weightDecay)
        try c.encode(bucketMB, forKey: .bucketMB)
        try c.encode(onNonFinite, forKey: .onNonFinite)
        try c.encode(recompute, forKey: .recompute)
        try c.encode(sharding, forKey: .sharding)
        try c.encodeIfPresent(precision, forKey: .precision)
        if gradReduce != .fp32 { try c.encode(gradReduce, forKey: .gradReduce) }
        try c.encodeIfPresent(data, forKey: .data)
        try c.encode(dataWeights, forKey: .dataWeights)
        try c.encodeIfPresent(tokenizer, forKey: .tokenizer)
        try c.encode(syntheticIgnoreFraction, forKey: .syntheticIgnoreFraction)
    }

    /// Sequences per optimizer step.
    public var globalBatchSequences: Int { globalBatchTokens / seqLen }

    /// Micro-steps per optimizer step on `worldSize` ranks, or an error that says which values would work.
    public func accumulationSteps(worldSize: Int, file: String? = nil) throws -> Int {
        guard globalBatchTokens > 0, globalBatchTokens % seqLen == 0 else {
            throw ConfigError(file: file, field: "train.global_batch_tokens",
                              message: "\(globalBatchTokens) is not a positive multiple of seq_len \(seqLen)")
        }
        let sequences = globalBatchSequences
        let perStep = microBatch * worldSize
        guard sequences % perStep == 0 else {
            let microBatches = (1...max(1, sequences / worldSize)).filter { sequences % ($0 * worldSize) == 0 }
            let worlds = (1...sequences).filter { sequences % ($0 * microBatch) == 0 }
            func list(_ values: [Int]) -> String {
                values.isEmpty ? "none" : values.prefix(12).map(String.init).joined(separator: ", ")
            }
            throw ConfigError(file: file, field: "train.micro_batch",
                              message: "\(sequences) sequences per step (global_batch_tokens \(globalBatchTokens) / seq_len \(seqLen)) do not split into micro-batches of \(microBatch) on \(worldSize) rank(s); micro_batch values that work on \(worldSize) rank(s): \(list(microBatches)); rank counts that work with micro_batch \(microBatch): \(list(worlds))")
        }
        return sequences / perStep
    }
}

/// Which stage a run trains; recorded in checkpoints, so that a stage never resumes another's.
public enum TrainingStage: String, Codable, Sendable {
    case pretrain, sft, reward
}

public struct RunConfig: Codable, Equatable, Sendable {
    public var model: LlamaConfig
    public var train: TrainSettings
    /// The fine-tuning stages' data and starting point (`llama-train sft` and `reward`).
    public var finetune: FineTuneSettings?

    public init(model: LlamaConfig, train: TrainSettings = TrainSettings()) {
        self.model = model
        self.train = train
    }

    /// Reads and validates a run config; every error names the file and the key.
    public static func load(path: String) throws -> RunConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(file: path, field: "-", message: "cannot read the file")
        }
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw ConfigError(file: path, field: "-", message: "not a JSON object")
        }
        let allowed: [String: Set<String>] = [
            "": ["model", "train", "finetune"],
            "model": Set(LlamaConfig.fileKeys),
            "train": Set(TrainSettings.CodingKeys.allCases.map(\.rawValue)),
            "finetune": Set(FineTuneSettings.CodingKeys.allCases.map(\.rawValue)),
        ]
        for (section, keys) in allowed {
            let dict = section.isEmpty ? object : (object[section] as? [String: Any] ?? [:])
            if let unknown = dict.keys.sorted().first(where: { !keys.contains($0) }) {
                throw ConfigError(file: path, field: section.isEmpty ? unknown : "\(section).\(unknown)",
                                  message: "unknown key; known keys: \(keys.sorted().joined(separator: ", "))")
            }
        }
        let config: RunConfig
        do {
            config = try JSONDecoder().decode(RunConfig.self, from: data)
        } catch let error as DecodingError {
            throw ConfigError(file: path, field: error.fieldPath, message: error.reason)
        }
        try config.validate(file: path)
        return config
    }
}

extension DecodingError {
    public var fieldPath: String {
        let path: [CodingKey]
        switch self {
        case let .keyNotFound(key, context): path = context.codingPath + [key]
        case let .typeMismatch(_, context), let .valueNotFound(_, context), let .dataCorrupted(context):
            path = context.codingPath
        @unknown default: path = []
        }
        return path.map(\.stringValue).joined(separator: ".")
    }

    public var reason: String {
        switch self {
        case .keyNotFound: "is required"
        case let .typeMismatch(type, _): "has the wrong type, expected \(type == UInt64.self ? "an integer in 0...2^64-1" : "\(type)")"
        case .valueNotFound: "is null"
        case let .dataCorrupted(context): "is not a value this field can hold (\(context.debugDescription))"
        @unknown default: "is invalid"
        }
    }
}

extension RunConfig {
    /// Every field of the config as (section.key, value) over a fixed schema (absent fields included), in a
    /// fixed order: what the ranks compare at start-up.
    public var fingerprintFields: [(name: String, value: String)] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        func section<T: Encodable>(_ value: T?) -> [String: Any] {
            guard let value, let data = try? encoder.encode(value) else { return [:] }
            return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        }
        func text(_ value: Any?) -> String {
            guard let value else { return "absent" }
            if value is [String: Any] || value is [Any],
               let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys]) {
                return String(decoding: data, as: UTF8.self)
            }
            return "\(value)"
        }
        let sections: [(String, [String], [String: Any])] = [
            ("model", LlamaConfig.fileKeys, section(model)),
            ("train", TrainSettings.CodingKeys.allCases.map(\.rawValue), section(train)),
            ("finetune", FineTuneSettings.CodingKeys.allCases.map(\.rawValue), section(finetune)),
        ]
        return sections.flatMap { name, keys, values in keys.sorted().map { ("\(name).\($0)", text(values[$0])) } }
    }
}
