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
        // The bounds are the model block's declared ranges (ModelBlock.swift): far above any real model.
        let sizes = [
            ("dim", dim), ("n_layers", nLayers), ("n_heads", nHeads), ("n_kv_heads", nKVHeads),
            ("vocab_size", vocabSize),
            ("ffn_hidden_size", ffnHiddenSize), ("head_dim", headDim), ("max_seq_len", maxSeqLen),
        ]
        for (field, value) in sizes where value <= 0 { throw fail(field, "must be a positive integer, got \(value)") }
        for (field, value) in sizes {
            guard case let .int(_, high) = ModelBlock.settings[field].kind, value > high else { continue }
            throw fail(field, "is \(value), above the largest this trainer accepts (\(high))")
        }
        for (field, value) in [("norm_eps", normEps), ("rope_theta", ropeTheta)]
        where !ModelBlock.settings[field].kind.admits(value) {
            throw fail(field, "must be \(ModelBlock.settings[field].kind.accepts), got \(value)")
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
        if heads.isEmpty {
            throw fail("heads", "is empty; a model needs at least one of \(OutputHead.allCases.map(\.rawValue))")
        }
        if Set(heads).count != heads.count {
            throw fail(
                "heads",
                "names a head twice (\(heads.map(\.rawValue))); each of \(OutputHead.allCases.map(\.rawValue)) at most once"
            )
        }
    }

    // MARK: - Our config files

    /// The keys a config file's "model" block may hold (ModelBlock's declarations).
    public static var fileKeys: [String] { ModelBlock.settings.names }

    public init(from decoder: Decoder) throws {
        var block = ModelBlock()
        try ModelBlock.settings.decode(&block, from: decoder)
        let container = try decoder.container(keyedBy: SettingKey.self)
        func field(_ name: String) -> String {
            (container.codingPath + [SettingKey(name)]).map(\.stringValue).joined(separator: ".")
        }
        // The two keys only the Meta rule reads are checked here; the stored ones are validate()'s.
        let multiple = ModelBlock.settings["multiple_of"].kind,
            multiplier = ModelBlock.settings["ffn_dim_multiplier"].kind
        if !multiple.admits(block.multipleOf) {
            throw ConfigError(
                field: field("multiple_of"), message: "must be \(multiple.accepts), got \(block.multipleOf)")
        }
        if let m = block.ffnDimMultiplier, !multiplier.admits(m) {
            throw ConfigError(field: field("ffn_dim_multiplier"), message: "must be \(multiplier.accepts), got \(m)")
        }
        self.init(
            dim: block.dim, nLayers: block.nLayers, nHeads: block.nHeads, nKVHeads: block.nKVHeads,
            vocabSize: block.vocabSize, ffnHiddenSize: block.ffnHiddenSize, multipleOf: block.multipleOf,
            ffnDimMultiplier: block.ffnDimMultiplier, headDim: block.headDim, normEps: block.normEps,
            ropeTheta: block.ropeTheta, maxSeqLen: block.maxSeqLen)
        heads = block.heads
        if let legacy = block.rewardHead {
            guard !container.contains(SettingKey("heads")) else {
                throw ConfigError(field: field("reward_head"), message: "give heads or reward_head, not both")
            }
            if legacy { heads = [.score] }
        }
    }

    public func encode(to encoder: Encoder) throws {
        var block = ModelBlock()
        (block.dim, block.nLayers, block.nHeads, block.nKVHeads) = (dim, nLayers, nHeads, nKVHeads)
        (block.vocabSize, block.ffnHiddenSize, block.headDim) = (vocabSize, ffnHiddenSize, headDim)
        (block.normEps, block.ropeTheta, block.maxSeqLen, block.heads) = (normEps, ropeTheta, maxSeqLen, heads)
        try ModelBlock.settings.encode(block, to: encoder)
    }
}
