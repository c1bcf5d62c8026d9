// LlamaConfig: the shape of a Llama 2 model, in our config files and in Hugging Face's config.json.
//
// What this is: the numbers that size every buffer, their validation, and the two JSON spellings.
// What this is not: training settings (batch, schedule); those live with the training loop.
import Foundation
import Support

public struct LlamaConfig: Codable, Equatable, Sendable {
    public var dim: Int
    public var nLayers: Int
    public var nHeads: Int
    /// Grouped-query attention: each key/value head serves nHeads / nKVHeads query heads.
    public var nKVHeads: Int
    public var vocabSize: Int
    /// SwiGLU width. When a config omits it, Meta's rule derives it from dim, multiple_of and
    /// ffn_dim_multiplier (4096 → 11008 for 7B).
    public var ffnHiddenSize: Int
    public var headDim: Int
    public var normEps: Double
    public var ropeTheta: Double
    public var maxSeqLen: Int
    /// The output heads on the final norm, in layout order (see OutputHead): `lm_head` for a language model,
    /// `score` for a reward model, `lm_head` and `value` for PPO's policy with its value estimate.
    public var heads: [OutputHead] = [.lm]

    /// Outputs per position over all heads: the width of the arena's head outputs.
    public var headRows: Int { heads.reduce(0) { $0 + $1.rows(self) } }

    public init(
        dim: Int, nLayers: Int, nHeads: Int, nKVHeads: Int? = nil, vocabSize: Int = 32000,
        ffnHiddenSize: Int? = nil, multipleOf: Int = 256, ffnDimMultiplier: Double? = nil,
        headDim: Int? = nil, normEps: Double = 1e-5, ropeTheta: Double = 10000, maxSeqLen: Int = 4096
    ) {
        self.dim = dim
        self.nLayers = nLayers
        self.nHeads = nHeads
        self.nKVHeads = nKVHeads ?? nHeads
        self.vocabSize = vocabSize
        self.ffnHiddenSize =
            ffnHiddenSize
            ?? LlamaConfig.metaFFNHiddenSize(dim: dim, multipleOf: multipleOf, ffnDimMultiplier: ffnDimMultiplier)
        self.headDim = headDim ?? (nHeads > 0 ? dim / nHeads : 0)
        self.normEps = normEps
        self.ropeTheta = ropeTheta
        self.maxSeqLen = maxSeqLen
    }

    /// Meta's llama/model.py: hidden = 2/3 · 4·dim, times the multiplier, rounded up to a multiple_of.
    public static func metaFFNHiddenSize(dim: Int, multipleOf: Int, ffnDimMultiplier: Double?) -> Int {
        var hidden = 2 * (4 * dim) / 3
        if let multiplier = ffnDimMultiplier { hidden = Int(multiplier * Double(hidden)) }
        let m = max(multipleOf, 1)
        return m * ((hidden + m - 1) / m)
    }

    /// Parameters of this shape (ParameterLayout's count, from its table), overflow checked: nil when absurd.
    public var parameterCount: Int? { ParameterLayout.Sizes(self)?.count }

    public var qDim: Int { nHeads * headDim }
    public var kvDim: Int { nKVHeads * headDim }

    /// Checks every constraint the kernels rely on; the error names the field and what would work.
    public func validate(file: String? = nil) throws {
        func fail(_ field: String, _ message: String) -> ConfigError {
            ConfigError(file: file, field: field, message: message)
        }
        for (field, value) in [
            ("dim", dim), ("n_layers", nLayers), ("n_heads", nHeads), ("n_kv_heads", nKVHeads),
            ("vocab_size", vocabSize), ("ffn_hidden_size", ffnHiddenSize),
            ("head_dim", headDim), ("max_seq_len", maxSeqLen),
        ] where value <= 0 {
            throw fail(field, "must be a positive integer, got \(value)")
        }
        // Bounds far above any real model (70B: dim 8192, 80 layers, ffn 28672), so that a typo such as 1e15
        // layers is refused here instead of trapping in an allocation; tokens are Int32, hence the vocabulary.
        for (field, value, limit) in [
            ("dim", dim, 1 << 20), ("n_layers", nLayers, 1 << 16), ("n_heads", nHeads, 1 << 16),
            ("n_kv_heads", nKVHeads, 1 << 16), ("vocab_size", vocabSize, Int(Int32.max)),
            ("ffn_hidden_size", ffnHiddenSize, 1 << 22), ("head_dim", headDim, 1 << 16),
            ("max_seq_len", maxSeqLen, 1 << 24),
        ] where value > limit {
            throw fail(field, "is \(value), above the largest this trainer accepts (\(limit))")
        }
        guard let count = parameterCount, count <= 1 << 42 else {
            throw fail(
                "-",
                "the model would have more than 2^42 parameters (dim \(dim), n_layers \(nLayers), vocab_size \(vocabSize), ffn_hidden_size \(ffnHiddenSize)); check the model block"
            )
        }
        if nHeads % nKVHeads != 0 {
            throw fail(
                "n_kv_heads",
                "n_heads (\(nHeads)) must be a multiple of n_kv_heads (\(nKVHeads)); "
                    + "divisors of \(nHeads): \((1...nHeads).filter { nHeads % $0 == 0 })")
        }
        if dim % nHeads != 0 && headDim == dim / nHeads {
            throw fail("n_heads", "dim (\(dim)) must be divisible by n_heads (\(nHeads)), or give head_dim")
        }
        if headDim % 2 != 0 {
            throw fail("head_dim", "rotary embeddings rotate pairs, so the head dimension must be even, got \(headDim)")
        }
        if !(normEps > 0) { throw fail("norm_eps", "must be positive, got \(normEps)") }
        if !(ropeTheta > 0) { throw fail("rope_theta", "must be positive, got \(ropeTheta)") }
        if Set(heads).count != heads.count {
            throw fail(
                "heads",
                "names a head twice (\(heads.map(\.rawValue))); each of \(OutputHead.allCases.map(\.rawValue)) at most once"
            )
        }
    }

    // MARK: - Our config files

    /// The keys a config file's "model" block may hold.
    public static var fileKeys: [String] { CodingKeys.allCases.map(\.rawValue) }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case dim, nLayers = "n_layers", nHeads = "n_heads", nKVHeads = "n_kv_heads", vocabSize = "vocab_size"
        case ffnHiddenSize = "ffn_hidden_size", multipleOf = "multiple_of", ffnDimMultiplier = "ffn_dim_multiplier"
        case headDim = "head_dim", normEps = "norm_eps", ropeTheta = "rope_theta", maxSeqLen = "max_seq_len"
        case heads
        /// Written before heads were a list: `true` is `heads: ["score"]`.
        case rewardHead = "reward_head"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            dim: try c.decode(Int.self, forKey: .dim),
            nLayers: try c.decode(Int.self, forKey: .nLayers),
            nHeads: try c.decode(Int.self, forKey: .nHeads),
            nKVHeads: try c.decodeIfPresent(Int.self, forKey: .nKVHeads),
            vocabSize: try c.decodeIfPresent(Int.self, forKey: .vocabSize) ?? 32000,
            ffnHiddenSize: try c.decodeIfPresent(Int.self, forKey: .ffnHiddenSize),
            multipleOf: try c.decodeIfPresent(Int.self, forKey: .multipleOf) ?? 256,
            ffnDimMultiplier: try c.decodeIfPresent(Double.self, forKey: .ffnDimMultiplier),
            headDim: try c.decodeIfPresent(Int.self, forKey: .headDim),
            normEps: try c.decodeIfPresent(Double.self, forKey: .normEps) ?? 1e-5,
            ropeTheta: try c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? 10000,
            maxSeqLen: try c.decodeIfPresent(Int.self, forKey: .maxSeqLen) ?? 4096)
        let legacyReward = try c.decodeIfPresent(Bool.self, forKey: .rewardHead)
        if let listed = try c.decodeIfPresent([OutputHead].self, forKey: .heads) {
            guard legacyReward == nil else {
                throw DecodingError.dataCorruptedError(
                    forKey: .rewardHead, in: c, debugDescription: "give heads or reward_head, not both")
            }
            heads = listed
        } else if legacyReward == true {
            heads = [.score]
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(dim, forKey: .dim)
        try c.encode(nLayers, forKey: .nLayers)
        try c.encode(nHeads, forKey: .nHeads)
        try c.encode(nKVHeads, forKey: .nKVHeads)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(ffnHiddenSize, forKey: .ffnHiddenSize)
        try c.encode(headDim, forKey: .headDim)
        try c.encode(normEps, forKey: .normEps)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        try c.encode(maxSeqLen, forKey: .maxSeqLen)
        if heads != [.lm] { try c.encode(heads, forKey: .heads) }
    }
}
