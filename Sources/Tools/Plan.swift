// TrainingPlan: what a config costs on N ranks, computed without allocating or training: parameter count,
// batch arithmetic, memory per rank and bytes reduced per step. `llama-train plan` prints it.
import Configuration
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
    public var parameterBytes: Int
    public var gradientBytes: Int
    public var optimizerBytes: Int
    /// What the arena holds: `none` keeps every block's activations, `layer` one block's and the residuals.
    public var recompute: String
    public var activationBytes: Int
    public var memoryPerRankBytes: Int
    /// The gradient buffer every rank contributes to the sum each step.
    public var allreduceBytesPerStep: Int
    /// What a ring allreduce moves in and out of each rank: 2 (N − 1) / N of the buffer.
    public var ringBytesPerRankPerStep: Int
    public var flopsPerToken: Double

    enum CodingKeys: String, CodingKey {
        case parameters, nonEmbeddingParameters = "non_embedding_parameters", ranks, microBatch = "micro_batch"
        case seqLen = "seq_len", accumulationSteps = "accumulation_steps", tokensPerStep = "tokens_per_step"
        case parameterBytes = "parameter_bytes", gradientBytes = "gradient_bytes", optimizerBytes = "optimizer_bytes"
        case activationBytes = "activation_bytes", recompute, memoryPerRankBytes = "memory_per_rank_bytes"
        case allreduceBytesPerStep = "allreduce_bytes_per_step", ringBytesPerRankPerStep = "ring_bytes_per_rank_per_step"
        case flopsPerToken = "flops_per_token"
    }

    public init(config: RunConfig, ranks: Int, file: String? = nil) throws {
        guard ranks >= 1 else { throw ConfigError(file: file, field: "ranks", message: "must be at least 1") }
        let t = config.train
        let layout = ParameterLayout(config: config.model)
        let sequences = t.globalBatchSequences
        if ranks > sequences {
            throw ConfigError(file: file, field: "train.global_batch_tokens",
                              message: "\(ranks) ranks need at least \(ranks) sequences per step, the global batch has \(sequences)")
        }
        accumulationSteps = try t.accumulationSteps(worldSize: ranks, file: file)
        parameters = layout.count
        nonEmbeddingParameters = layout.nonEmbeddingCount
        self.ranks = ranks
        microBatch = t.microBatch
        seqLen = t.seqLen
        tokensPerStep = sequences * t.seqLen
        parameterBytes = 4 * layout.count
        gradientBytes = 4 * layout.count
        optimizerBytes = 8 * layout.count
        recompute = t.recompute.rawValue
        activationBytes = ActivationArena.Plan(config: config.model, batch: t.microBatch, seqLen: t.seqLen,
                                               purpose: .training(t.recompute)).byteCount
        memoryPerRankBytes = parameterBytes + gradientBytes + optimizerBytes + activationBytes
        allreduceBytesPerStep = 4 * layout.count
        ringBytesPerRankPerStep = ranks > 1 ? 2 * (ranks - 1) * allreduceBytesPerStep / ranks : 0
        flopsPerToken = 6 * Double(layout.nonEmbeddingCount) + 6 * Double(config.model.nLayers * t.seqLen * config.model.dim)
    }
}
