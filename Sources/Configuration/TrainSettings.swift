// The `train` block of a run config: the batch shape, schedule, optimizer, parallelism, precision and data.
// Each key is declared once below (Support/Settings.swift): its name, default and why, range, help and flag;
// the struct's initial values, decoding, encoding, range checks, the command line's overrides, the rank
// fingerprint and the README's table all come from that list.
//
// What this is not: the checks that relate keys to each other or to the model (Validation.swift), or the
// batch arithmetic's refusals (accumulationSteps below, which say which values would work).
import Model
import Optim
import Support

public struct TrainSettings: Codable, Equatable, Sendable {
    public enum NonFinitePolicy: String, Codable, CaseIterable, Sendable, SettingChoice { case stop, skip }

    // The initial values are the declared defaults; the declarations say what each key means.
    public var seqLen: Int = Self.declared(\.seqLen)
    public var microBatch: Int = Self.declared(\.microBatch)
    public var seed: UInt64 = Self.declared(\.seed)
    public var globalBatchTokens: Int = Self.declared(\.globalBatchTokens)
    public var steps: Int = Self.declared(\.steps)
    public var learningRate: Double = Self.declared(\.learningRate)
    public var warmupSteps: Int = Self.declared(\.warmupSteps)
    public var minLRRatio: Double = Self.declared(\.minLRRatio)
    public var gradClip: Double = Self.declared(\.gradClip)
    /// The file's beta1, beta2, eps and weight_decay keys.
    public var adamw: AdamWSettings = AdamWSettings(
        beta1: Self.declared(\.adamw.beta1), beta2: Self.declared(\.adamw.beta2), eps: Self.declared(\.adamw.eps),
        weightDecay: Self.declared(\.adamw.weightDecay))
    public var bucketMB: Double = Self.declared(\.bucketMB)
    public var onNonFinite: NonFinitePolicy = Self.declared(\.onNonFinite)
    public var recompute: Recompute = Self.declared(\.recompute)
    public var sharding: ShardingMode = Self.declared(\.sharding)
    public var precision: Precision? = Self.declared(\.precision)
    public var gradReduce: Precision = Self.declared(\.gradReduce)
    public var data: String? = Self.declared(\.data)
    public var dataWeights: [String: Double] = Self.declared(\.dataWeights)
    public var tokenizer: String? = Self.declared(\.tokenizer)
    public var syntheticIgnoreFraction: Double = Self.declared(\.syntheticIgnoreFraction)
    public var evalData: String? = Self.declared(\.evalData)
    public var evalHoldout: Double = Self.declared(\.evalHoldout)
    public var evalWindows: Int = Self.declared(\.evalWindows)

    public init() {}

    public init(from decoder: Decoder) throws {
        self.init()
        try Self.settings.decode(&self, from: decoder)
    }

    public func encode(to encoder: Encoder) throws { try Self.settings.encode(self, to: encoder) }

    static func declared<V>(_ keyPath: KeyPath<TrainSettings, V>) -> V { settings.defaultValue(keyPath) }

    /// 1 TiB: a bucket larger than any gradient buffer is one bucket; beyond this a typo is likelier.
    public static let maxBucketMB = 1_048_576.0
    /// 2^40 tokens per step (a quarter of a million times Llama 2's 4M); beyond is a typo.
    public static let maxGlobalBatchTokens = 1 << 40

    /// Every key of the block, in the order the JSON is written (today's order: checkpoints hash it).
    public static let settings = SettingsBlock<TrainSettings>(
        "train",
        [
            Setting(
                \.seqLen, "seq_len", 256, because: "Llama 2 trains at 4096; the small configs use less to fit 2 cores",
                .int(min: 1, max: Int.max), help: "tokens per sequence, at most model.max_seq_len"),
            Setting(
                \.microBatch, "micro_batch", 4, because: "small enough for any machine; raise it to what fits",
                .int(min: 1, max: 1 << 20), flag: "micro-batch", help: "sequences per rank per micro-step"),
            Setting(
                \.seed, "seed", 1337, because: "any fixed value, so that a run repeats exactly", flag: "seed",
                help: "seed of initialisation and data order"),
            Setting(
                \.globalBatchTokens, "global_batch_tokens", 4_194_304, because: "Llama 2's 4M: 1024 sequences of 4096",
                .int(min: 1, max: maxGlobalBatchTokens), flag: "global-batch-tokens",
                help: "tokens per optimizer step over all ranks and micro-steps"),
            Setting(
                \.steps, "steps", 1000, because: "a short run (Llama 2 7B took 500k steps of 4M tokens)",
                .int(min: 1, max: 1 << 40), flag: "steps", help: "optimizer steps of the run: the schedule's length"),
            Setting(
                \.learningRate, "lr", 3e-4, because: "Llama 2 Table 1: 7B and 13B (1.5e-4 for 34B and 70B)",
                .number(min: 0, inclusive: false, max: 10), flag: "lr", help: "peak learning rate"),
            Setting(
                \.warmupSteps, "warmup_steps", 2000, because: "Llama 2 §2.2", .int(min: 0, max: 1 << 40),
                flag: "warmup-steps", help: "linear warm-up steps, then cosine decay to min_lr_ratio × peak"),
            Setting(
                \.minLRRatio, "min_lr_ratio", 0.1, because: "Llama 2 §2.2: the cosine ends at 10% of the peak",
                .number(min: 0, inclusive: true, max: 1), help: "the cosine schedule's floor, a fraction of the peak"),
            Setting(
                \.gradClip, "grad_clip", 1.0, because: "Llama 2 §2.2",
                .number(min: 0, inclusive: false, max: .infinity), help: "global gradient-norm clipping threshold"),
            Setting(\.adamw.beta1, "beta1", 0.9, because: "Llama 2 §2.2", belowOne, help: "AdamW's first-moment decay"),
            Setting(
                \.adamw.beta2, "beta2", 0.95, because: "Llama 2 §2.2", belowOne, help: "AdamW's second-moment decay"),
            Setting(
                \.adamw.eps, "eps", 1e-5, because: "Llama 2 §2.2", .number(min: 0, inclusive: false, max: .infinity),
                help: "AdamW's denominator term"),
            Setting(
                \.adamw.weightDecay, "weight_decay", 0.1, because: "Llama 2 §2.2",
                .number(min: 0, inclusive: true, max: 10), help: "AdamW's decoupled weight decay, on matrices only"),
            Setting(
                \.bucketMB, "bucket_mb", 25.0, because: "PyTorch DDP's bucket_cap_mb",
                .number(min: 0.001, inclusive: true, max: maxBucketMB), flag: "bucket-mb",
                help: "allreduce bucket size in MB"),
            Setting(
                \.onNonFinite, "on_nonfinite", .stop, because: "a NaN or Inf means a bug or bad data; a skip hides it",
                flag: "on-nonfinite", help: "a NaN or Inf loss or gradient norm stops the run, or skips the step"),
            Setting(
                \.recompute, "recompute", .none,
                because: "fastest where activations fit; 7B–70B at 4096 tokens need layer", flag: "recompute",
                help: "keep every block's activations, or only each block's input and recompute the block before "
                    + "its backward (about 1.3× the compute)"),
            Setting(
                \.sharding, "sharding", .none, because: "replicated is fastest where the state fits", flag: "sharding",
                help: "what each rank keeps: all, or its own share of moments, gradients, parameters"),
            Setting(
                \.precision, "precision", nil, because: "bf16 where the CPU has AVX-512 BF16 or AMX, else fp32",
                flag: "precision", help: "matmul precision"),
            // Omitted at fp32, so configs and checkpoints from before the key read and hash as they did.
            Setting(
                \.gradReduce, "grad_reduce", .fp32, because: "exact; bf16 halves the bytes (sharding none only)",
                flag: "grad-reduce", encoding: .unlessDefault, help: "the gradient allreduce's wire format"),
            Setting(
                \.data, "data", nil, because: "synthetic tokens, for benchmarks and tests", flag: "data",
                placeholder: "DIR", help: "token shards written by `llama-train prepare`"),
            Setting(
                \.dataWeights, "data_weights", [:], because: "each source weighs 1: its share follows its tokens",
                placeholder: "{NAME: WEIGHT}", help: "mixture weight per source name, each in [0, 1e6]"),
            Setting(
                \.tokenizer, "tokenizer", nil, because: "none, which only synthetic data allows", flag: "tokenizer",
                placeholder: "FILE",
                help: "the tokenizer the shards were made with (its hash must match); copied next to the model"),
            Setting(
                \.syntheticIgnoreFraction, "synthetic_ignore_fraction", 0.0, because: "every target counts", belowOne,
                help: "synthetic data only: the fraction of targets ignored, to exercise masked averaging"),
            // The validation keys are omitted at their defaults, so configs and checkpoints from before them
            // read and hash as they did.
            Setting(
                \.evalData, "eval_data", nil, because: "no validation loss (unless eval_holdout holds some out)",
                flag: "eval-data", placeholder: "DIR", encoding: .unlessDefault,
                help: "prepared shards (same tokenizer) whose windows give the validation loss (pretraining)"),
            Setting(
                \.evalHoldout, "eval_holdout", 0.0, because: "training reads every window of train.data",
                belowOne, encoding: .unlessDefault,
                help: "instead of eval_data: this fraction of each source's windows, at the end of its stream, is "
                    + "never trained on and gives the validation loss"),
            Setting(
                \.evalWindows, "eval_windows", 256, because: "about a million tokens at Llama 2's 4096",
                .int(min: 1, max: 1 << 40), encoding: .unlessDefault,
                help: "windows of seq_len + 1 tokens the validation loss reads: the same ones every time, spread "
                    + "evenly over the held-out set"),
        ])

    /// [0, 1): AdamW's decays, and fractions that must leave something.
    static let belowOne = ValueKind.number(min: 0, inclusive: true, max: 1, maxInclusive: false)

    /// Sequences per optimizer step.
    public var globalBatchSequences: Int { globalBatchTokens / seqLen }

    /// Micro-steps per optimizer step on `worldSize` ranks, or an error that says which values would work.
    public func accumulationSteps(worldSize: Int, file: String? = nil) throws -> Int {
        guard globalBatchTokens > 0, globalBatchTokens % seqLen == 0 else {
            throw ConfigError(
                file: file, field: "train.global_batch_tokens",
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
            throw ConfigError(
                file: file, field: "train.micro_batch",
                message:
                    "\(sequences) sequences per step (global_batch_tokens \(globalBatchTokens) / seq_len \(seqLen)) do not "
                    + "split into micro-batches of \(microBatch) on \(worldSize) rank(s); micro_batch values that work on "
                    + "\(worldSize) rank(s): \(list(microBatches)); rank counts that work with micro_batch \(microBatch): "
                    + "\(list(worlds))")
        }
        return sequences / perStep
    }
}
