// TrainingPlan: what a config costs on N ranks, computed without allocating or training: parameter count,
// batch arithmetic, memory per rank (exactly what the trainer allocates, by sharding mode) and the bytes each
// rank sends per step. `llama-train plan` prints it.
import Configuration
import Foundation
import Inference
import Model
import Support

public struct TrainingPlan: Codable, Sendable {
    public var parameters: Int
    public var nonEmbeddingParameters: Int
    public var ranks: Int
    public var microBatch: Int
    public var seqLen: Int
    public var accumulationSteps: Int
    public var tokensPerStep: Int
    public var sharding: String
    public var parameterBytes: Int
    public var gradientBytes: Int
    public var optimizerBytes: Int
    /// Sharding's working buffers: gathered units, a unit's gradients, the reduce-scatter's result.
    public var shardingWorkBytes: Int
    /// bf16's working buffers (rounded matmul inputs, the bf16 gradient bucket); 0 in fp32.
    public var precisionWorkBytes: Int
    /// What the arena holds: `none` keeps every block's activations, `layer` one block's and the residuals.
    public var recompute: String
    public var activationBytes: Int
    /// The bounded buffers of loading a starting model and of export.
    public var ioStagingBytes: Int
    /// A checkpoint save's copy of the rank's shard (parameters, m, v of what it owns), with `checkpoints`.
    public var checkpointStagingBytes: Int
    public var memoryPerRankBytes: Int
    /// Ranks sharing one node's memory, and whether their memory fits this machine's (a node like this one).
    public var ranksPerNode: Int
    public var fitsThisNode: Bool
    /// The gradient buffer every rank contributes to the sum each step.
    public var allreduceBytesPerStep: Int
    /// What each rank sends (and receives) per optimizer step under the sharding mode, by ring algorithms:
    /// none and optimizer 2 (N − 1)/N of the parameters' bytes; gradients (N − 1)/N per micro-step plus one
    /// allgather; full 3 (N − 1)/N per micro-step (gather for forward, again for backward, reduce-scatter).
    public var communicationBytesPerRankPerStep: Int
    /// Memory per rank under each sharding mode on this many ranks, for comparison.
    public var memoryPerRankByMode: [String: Int]
    public var flopsPerToken: Double
    /// Generation (InferenceEngine) on one rank: `generationBatch` sequences of `generationLength` tokens; the KV
    /// cache is 2 · layers · kv_heads · head_dim · length · batch values, in `generationCache` (fp32 or bf16).
    public var generationBatch: Int
    public var generationLength: Int
    public var generationCache: String
    public var generationCacheBytes: Int
    /// The matrices decode reads, packed in this precision.
    public var generationDecodeWeights: String
    public var generationDecodeWeightsBytes: Int
    /// The model's fp32 weights, their decode packing, the cache, and the engine's workspace and scratch.
    public var generationMemoryBytes: Int

    enum CodingKeys: String, CodingKey {
        case parameters, nonEmbeddingParameters = "non_embedding_parameters", ranks, microBatch = "micro_batch"
        case seqLen = "seq_len", accumulationSteps = "accumulation_steps", tokensPerStep = "tokens_per_step", sharding
        case parameterBytes = "parameter_bytes", gradientBytes = "gradient_bytes", optimizerBytes = "optimizer_bytes"
        case shardingWorkBytes = "sharding_work_bytes", precisionWorkBytes = "precision_work_bytes", activationBytes =
            "activation_bytes", recompute
        case ioStagingBytes = "io_staging_bytes", checkpointStagingBytes = "checkpoint_staging_bytes"
        case ranksPerNode = "ranks_per_node", fitsThisNode = "fits_this_node"
        case memoryPerRankBytes = "memory_per_rank_bytes", allreduceBytesPerStep = "allreduce_bytes_per_step"
        case communicationBytesPerRankPerStep = "communication_bytes_per_rank_per_step"
        case memoryPerRankByMode = "memory_per_rank_by_mode", flopsPerToken = "flops_per_token"
        case generationBatch = "generation_batch", generationLength = "generation_length"
        case generationCacheBytes = "generation_cache_bytes", generationMemoryBytes = "generation_memory_bytes"
        case generationDecodeWeights = "generation_decode_weights", generationCache = "generation_cache"
        case generationDecodeWeightsBytes = "generation_decode_weights_bytes"
    }

    public init(
        config: RunConfig, ranks: Int, ranksPerNode: Int = 1, checkpoints: Bool = false, file: String? = nil,
        generationBatch: Int = 32, generationLength: Int? = nil, decodeWeights: DecodePrecision = .fp32,
        cache: DecodePrecision = .fp32
    ) throws {
        guard ranks >= 1 else { throw ConfigError(file: file, field: "ranks", message: "must be at least 1") }
        try config.validate(file: file)
        let t = config.train
        let layout = ParameterLayout(config: config.model)
        let sequences = t.globalBatchSequences
        if ranks > sequences {
            throw ConfigError(
                file: file, field: "train.global_batch_tokens",
                message: "\(ranks) ranks need at least \(ranks) sequences per step, the global batch has \(sequences)")
        }
        accumulationSteps = try t.accumulationSteps(worldSize: ranks, file: file)
        parameters = layout.count
        nonEmbeddingParameters = layout.nonEmbeddingCount
        self.ranks = ranks
        microBatch = t.microBatch
        seqLen = t.seqLen
        tokensPerStep = sequences * t.seqLen
        sharding = t.sharding.rawValue
        guard let memory = config.rankMemory(ranks: ranks, checkpoints: checkpoints) else {
            throw ConfigError(file: file, field: "-", message: "the memory per rank is too large to count")
        }
        parameterBytes = memory.parameters
        gradientBytes = memory.gradients
        optimizerBytes = memory.moments
        shardingWorkBytes = memory.shardingWork
        precisionWorkBytes = memory.precisionWork
        recompute = t.recompute.rawValue
        activationBytes = memory.activations
        ioStagingBytes = memory.ioStaging
        checkpointStagingBytes = memory.checkpointStaging
        memoryPerRankBytes = memory.total
        self.ranksPerNode = ranksPerNode
        fitsThisNode =
            CheckedSize.product(memory.total, ranksPerNode).map {
                $0 <= Int(clamping: ProcessInfo.processInfo.physicalMemory)
            } ?? false
        allreduceBytesPerStep = 4 * layout.count
        let part = ranks > 1 ? Double(ranks - 1) / Double(ranks) * Double(4 * layout.count) : 0
        let communication: Double =
            switch t.sharding {
            case .none, .optimizer: 2 * part
            case .gradients: Double(accumulationSteps) * part + part
            case .full: 3 * Double(accumulationSteps) * part
            }
        communicationBytesPerRankPerStep = Int(communication)
        var byMode: [String: Int] = [:]
        for mode in ShardingMode.allCases {
            var other = config
            other.train.sharding = mode
            byMode[mode.rawValue] = other.rankMemory(ranks: ranks, checkpoints: checkpoints)?.total ?? -1
        }
        memoryPerRankByMode = byMode
        flopsPerToken = ParameterLayout.flopsPerToken(config.model, seqLen: t.seqLen)
        self.generationBatch = generationBatch
        self.generationLength = min(generationLength ?? config.model.maxSeqLen, config.model.maxSeqLen)
        generationCache = cache.rawValue
        generationCacheBytes =
            cache.bytesPerValue
            * InferenceEngine.cacheValues(config.model, slots: generationBatch, maxLength: self.generationLength)
        generationDecodeWeights = decodeWeights.rawValue
        generationDecodeWeightsBytes = DecodeWeights.bytes(config.model, precision: decodeWeights)
        generationMemoryBytes =
            4 * layout.count
            + InferenceEngine.bytes(
                config.model, slots: generationBatch, maxLength: self.generationLength, decodeWeights: decodeWeights,
                cache: cache)
    }
}
