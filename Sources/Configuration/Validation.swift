// One validation pass over the effective configuration: the file as loaded, after every command-line
// override and every fine-tuning edit. Every field is checked for range and finiteness (the ranges declared with
// the keys, the relations between keys here), sizes are computed with overflow checked, and a run whose plan
// exceeds the machine's memory is refused before it allocates.
// What this is not: checks that need the data or the world size's divisors (the loader and the batch
// arithmetic make those, with their own messages).
import Foundation
import Model
import Support

extension RunConfig {
    /// Checks every field; the error names the file and the field, and what would work.
    public func validate(file: String? = nil) throws {
        try model.validate(file: file)
        func fail(_ field: String, _ message: String) -> ConfigError {
            ConfigError(file: file, field: field, message: message)
        }
        func check(_ field: String, _ ok: Bool, _ message: String) throws { if !ok { throw fail(field, message) } }
        let t = train
        // The pure ranges are declared with each key (TrainSettings.swift, FineTuneSettings.swift); what
        // follows relates keys to each other and to the model.
        try TrainSettings.settings.checkRanges(t, file: file)
        try check(
            "train.seq_len", t.seqLen <= model.maxSeqLen,
            "must be in 1...\(model.maxSeqLen) (model.max_seq_len), got \(t.seqLen)")
        try check(
            "train.global_batch_tokens", t.globalBatchTokens % t.seqLen == 0,
            "\(t.globalBatchTokens) is not a multiple of seq_len \(t.seqLen)")
        try check(
            "train.global_batch_tokens", t.globalBatchSequences >= t.microBatch,
            "\(t.globalBatchSequences) sequences per step are fewer than one micro-batch of \(t.microBatch)")
        for (name, weight) in t.dataWeights.sorted(by: { $0.key < $1.key }) {
            try check(
                "train.data_weights.\(name)", weight.isFinite && weight >= 0 && weight <= 1e6,
                "must be in [0, 1e6] (1 keeps the source's share, 2 up-samples it), got \(weight)")
        }
        try check(
            "train.data_weights", t.dataWeights.isEmpty || t.dataWeights.values.contains { $0 > 0 }, "every weight is 0"
        )
        try check(
            "train.grad_reduce", t.gradReduce == .fp32 || t.sharding == .none,
            "bf16 applies to the bucketed allreduce of sharding 'none'; sharded modes reduce-scatter in fp32")
        try check(
            "train.tokenizer", t.data == nil || t.tokenizer != nil,
            "is required with train.data, to check the shards were made by it")
        try check(
            "train.eval_holdout", t.evalHoldout == 0 || t.evalData == nil,
            "and train.eval_data both name validation windows: keep one")
        try check(
            "train.eval_holdout", t.evalHoldout == 0 || t.data != nil,
            "holds out windows of train.data, which is not set (synthetic tokens have nothing to hold out)")
        try check(
            "train.eval_data", t.evalData == nil || t.tokenizer != nil,
            "needs train.tokenizer, to check the shards were made by it")
        // The kernels take rows (micro_batch × seq_len) as a C int; their offsets are 64-bit.
        try check(
            "train.micro_batch", t.microBatch * t.seqLen <= Int(Int32.max),
            "micro_batch \(t.microBatch) × seq_len \(t.seqLen) rows exceed 2^31 − 1 per micro-step")
        guard activationBytes(microBatch: t.microBatch, seqLen: t.seqLen) != nil else {
            throw fail(
                "train.micro_batch",
                "micro_batch \(t.microBatch) × seq_len \(t.seqLen) needs more activation memory than can be counted")
        }
        if let f = finetune {
            try FineTuneSettings.settings.checkRanges(f, file: file)
            try check("finetune.data", !f.data.isEmpty, "must name a JSON Lines file")
            try check("finetune.separator", !f.separator.isEmpty, "must name a piece of the tokenizer, such as <sep>")
        }
        if let p = ppo {
            try PPOSettings.settings.checkRanges(p, file: file)
            try check("ppo.reward_model", !p.rewardModel.isEmpty, "must name a reward model directory")
            try check(
                "ppo.mini_batch_size", p.batchSize % p.miniBatchSize == 0,
                "batch_size \(p.batchSize) is not a multiple of mini_batch_size \(p.miniBatchSize)")
        }
    }

    /// Bytes of one rank's activation arena, or nil when the shape is too large to count.
    public func activationBytes(microBatch B: Int, seqLen T: Int) -> Int? {
        let widest = max(model.dim, model.ffnHiddenSize, model.qDim, model.headRows)
        // The arena's largest buffers bound every carve, so the plan below cannot overflow once these fit.
        guard CheckedSize.product(B, T, widest, 16 * (model.nLayers + 4), 4) != nil else { return nil }
        return ActivationArena.Plan(config: model, batch: B, seqLen: T, purpose: .training(train.recompute)).byteCount
    }

    /// The largest unit (embedding, one block, final norm + head): what sharded training gathers at once.
    public var largestUnit: Int? { ParameterLayout.Sizes(model)?.largestUnit }

    /// Bytes of the bounded buffers that loading and export pass data through: a safetensors read of at most
    /// 1M elements (8 MB for F64, 2 MB for BF16), the 8 MB buffer that hashes a checkpoint's section, and an
    /// export's 1M-element conversion (2 MB).
    public static let modelIOStagingBytes = (8 << 20) + (8 << 20) + (2 << 20)

    /// What one training rank holds on `ranks` ranks under train.sharding, in bytes: exactly what the trainer
    /// allocates for state (parameters, gradients, AdamW moments, sharding's working buffers) and activations,
    /// the staging of model I/O, and with `checkpoints` the copy a save makes of this rank's shard
    /// (parameters, m and v of what it owns: 12·P/N bytes; freed once committed, which --background-save
    /// delays while training goes on).
    public func rankMemory(ranks: Int, checkpoints: Bool = false) -> RankMemory? {
        guard let p = model.parameterCount, let unit = largestUnit,
            let activations = activationBytes(microBatch: train.microBatch, seqLen: train.seqLen), ranks >= 1
        else { return nil }
        let s = (p + ranks - 1) / ranks, scratch = min(s, unit)
        var m = RankMemory(activations: activations)
        switch train.sharding {
        case .none: (m.parameters, m.gradients, m.moments) = (4 * p, 4 * p, 8 * p)
        case .optimizer: (m.parameters, m.gradients, m.moments) = (4 * p, 4 * p + 4 * s, 8 * s)
        case .gradients:
            (m.parameters, m.gradients, m.moments, m.shardingWork) = (4 * p, 4 * s, 8 * s, 4 * (unit + scratch))
        case .full:
            (m.parameters, m.gradients, m.moments, m.shardingWork) = (4 * s, 4 * s, 8 * s, 4 * (3 * unit + scratch))
        }
        // bf16 (also the default, where the CPU has it: counted so the plan is an upper bound): the roundings
        // of a matmul's two inputs. The first holds an activation or an output gradient (up to N × vocab), the
        // second a weight (up to vocab × dim) or an activation; grad_reduce bf16 adds one bucket of bf16.
        if train.precision != .fp32 {
            let n = train.microBatch * train.seqLen, c = model.dim
            let widest = max(c, model.ffnHiddenSize, model.qDim, model.headRows)
            guard let first = CheckedSize.product(2, n, widest),
                let second = CheckedSize.product(
                    2,
                    max(
                        model.headRows * c, model.ffnHiddenSize * c, model.qDim * c,
                        n * max(c, model.ffnHiddenSize, model.qDim)))
            else { return nil }
            m.precisionWork = first + second
        }
        if train.gradReduce == .bf16 { m.precisionWork += 2 * max(1, Int(train.bucketMB * 1_048_576) / 4) }
        m.ioStaging = Self.modelIOStagingBytes
        // A shard holds the rank's flat range (none, optimizer) or its ⌈S/N⌉ of every unit: at most s + units.
        if checkpoints { m.checkpointStaging = 12 * s }
        return m
    }

    /// What one training rank holds on `ranks` ranks, or nil when too large to count.
    public func trainingBytesPerRank(ranks: Int = 1, checkpoints: Bool = false) -> Int? {
        rankMemory(ranks: ranks, checkpoints: checkpoints)?.total
    }

    /// Refuses, before anything is allocated, a training run that cannot fit in this machine's memory, shared by
    /// `ranksPerNode` ranks.
    public func checkFitsInMemory(
        ranks: Int = 1, ranksPerNode: Int = 1, checkpoints: Bool = false, file: String? = nil
    ) throws {
        let node = Int(clamping: ProcessInfo.processInfo.physicalMemory)
        let machine = node / max(ranksPerNode, 1)
        func gib(_ bytes: Int) -> String { String(format: "%.1f GiB", Double(bytes) / 1_073_741_824) }
        let share = ranksPerNode > 1 ? " for each of the \(ranksPerNode) ranks on this node (\(gib(node)) in all)" : ""
        guard let need = trainingBytesPerRank(ranks: ranks, checkpoints: checkpoints) else {
            throw ConfigError(
                file: file, field: "-",
                message:
                    "this model and batch need more memory per rank than can be counted; check the model block and micro_batch"
            )
        }
        guard need <= machine else {
            throw ConfigError(
                file: file, field: "-",
                message:
                    "training needs \(gib(need)) per rank (\(model.parameterCount ?? 0) parameters with sharding '\(train.sharding.rawValue)' on \(ranks) rank(s), plus \(gib(activationBytes(microBatch: train.microBatch, seqLen: train.seqLen) ?? 0)) of activations) but this machine has \(gib(machine))\(share); shard (train.sharding), recompute (train.recompute), lower micro_batch or seq_len, or choose a smaller model (`llama-train plan` shows the arithmetic)"
            )
        }
    }
}

/// One training rank's memory in bytes, by what holds it.
public struct RankMemory: Codable, Equatable, Sendable {
    public var parameters = 0
    public var gradients = 0
    public var moments = 0
    /// Sharding's working buffers: gathered units, a unit's gradients, the reduce-scatter's result.
    public var shardingWork = 0
    /// bf16's working buffers: the rounded matmul inputs, the bf16 gradient bucket.
    public var precisionWork = 0
    public var activations = 0
    /// The bounded buffers of loading a starting model and of export.
    public var ioStaging = 0
    /// A checkpoint save's copy of this rank's shard (when checkpoints are written).
    public var checkpointStaging = 0
    public var total: Int {
        parameters + gradients + moments + shardingWork + precisionWork + activations + ioStaging + checkpointStaging
    }
}
