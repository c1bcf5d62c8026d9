// The `model` block of our config files, declared key by key (Support/Settings.swift) like the train and
// finetune blocks: name, default and why, range, help. What a file may leave out is optional here and resolved
// by LlamaConfig (n_kv_heads from n_heads, ffn_hidden_size the Meta way, head_dim from dim / n_heads); the
// bounds LlamaConfig.validate enforces are these declarations' ranges. What this is not: Hugging Face's
// config.json, whose names differ (HuggingFace.swift).
import Support

public struct ModelBlock: Equatable, Sendable {
    public var dim = 0
    public var nLayers = 0
    public var nHeads = 0
    public var nKVHeads: Int? = Self.declared(\.nKVHeads)
    public var vocabSize: Int = Self.declared(\.vocabSize)
    public var ffnHiddenSize: Int? = Self.declared(\.ffnHiddenSize)
    public var multipleOf: Int = Self.declared(\.multipleOf)
    public var ffnDimMultiplier: Double? = Self.declared(\.ffnDimMultiplier)
    public var headDim: Int? = Self.declared(\.headDim)
    public var normEps: Double = Self.declared(\.normEps)
    public var ropeTheta: Double = Self.declared(\.ropeTheta)
    public var maxSeqLen: Int = Self.declared(\.maxSeqLen)
    public var heads: [OutputHead] = Self.declared(\.heads)
    /// Written before heads were a list: `true` is `heads: ["score"]`.
    public var rewardHead: Bool? = Self.declared(\.rewardHead)

    public init() {}

    static func declared<V>(_ keyPath: KeyPath<ModelBlock, V>) -> V { settings.defaultValue(keyPath) }

    /// Bounds far above any real model (70B: dim 8192, 80 layers, ffn 28672), so that a typo such as 1e15
    /// layers is refused before it traps in an allocation; tokens are Int32, hence the vocabulary's.
    public static let settings = SettingsBlock<ModelBlock>(
        "model",
        [
            Setting(required: \.dim, "dim", .int(min: 1, max: 1 << 20), help: "model width"),
            Setting(required: \.nLayers, "n_layers", .int(min: 1, max: 1 << 16), help: "decoder blocks"),
            Setting(required: \.nHeads, "n_heads", .int(min: 1, max: 1 << 16), help: "query heads"),
            Setting(
                \.nKVHeads, "n_kv_heads", nil, because: "n_heads: no grouping", .int(min: 1, max: 1 << 16),
                help: "key/value heads of grouped-query attention; n_heads must be a multiple"),
            Setting(
                \.vocabSize, "vocab_size", 32000, because: "Llama 2's tokenizer", .int(min: 1, max: Int(Int32.max)),
                help: "vocabulary, at least the tokenizer's pieces"),
            Setting(
                \.ffnHiddenSize, "ffn_hidden_size", nil,
                because: "derived Meta's way from multiple_of and ffn_dim_multiplier (4096 → 11008 for 7B)",
                .int(min: 1, max: 1 << 22), help: "SwiGLU width"),
            Setting(
                \.multipleOf, "multiple_of", 256, because: "Meta's llama/model.py", .int(min: 1, max: 1 << 22),
                encoding: .unlessDefault, help: "absent ffn_hidden_size: the width is rounded up to a multiple"),
            Setting(
                \.ffnDimMultiplier, "ffn_dim_multiplier", nil, because: "1 (34B and 70B use 1.3)",
                .number(min: 0, inclusive: false, max: 100), help: "absent ffn_hidden_size: scales 2/3 · 4 · dim"),
            Setting(
                \.headDim, "head_dim", nil, because: "dim / n_heads", .int(min: 1, max: 1 << 16),
                help: "width of one head; even, since rotary embeddings rotate pairs"),
            Setting(
                \.normEps, "norm_eps", 1e-5, because: "Llama 2's RMSNorm", .number(min: 0, inclusive: false, max: 1),
                help: "RMSNorm's epsilon"),
            Setting(
                \.ropeTheta, "rope_theta", 10000, because: "Llama 2's rotary base",
                .number(min: 0, inclusive: false, max: 1e12), help: "rotary embeddings' base"),
            Setting(
                \.maxSeqLen, "max_seq_len", 4096, because: "Llama 2's context", .int(min: 1, max: 1 << 24),
                help: "longest sequence the rotary tables and the arena are planned for"),
            Setting(
                \.heads, "heads", [.lm], because: "a language model", encoding: .unlessDefault,
                help:
                    "output heads in order: lm_head (logits), score (a reward model's scalar), value (PPO's, TRL's v_head)"
            ),
            Setting(
                \.rewardHead, "reward_head", nil, because: "the heads list decides",
                help: "older configs' spelling: true is heads [\"score\"]; give one of the two"),
        ])
}

/// A list of words (the heads): JSON's array of strings, or a comma-separated argument.
extension Array: SettingValue where Element: SettingChoice {
    public static var kind: ValueKind { .text }
    public init?(argument: String) {
        let words = argument.split(separator: ",").map { Element(rawValue: String($0)) }
        guard words.allSatisfy({ $0 != nil }) else { return nil }
        self = words.map { $0! }
    }
    public var text: String { "[" + map(\.rawValue).joined(separator: ", ") + "]" }

    public static func decode<K: CodingKey>(from container: KeyedDecodingContainer<K>, forKey key: K) throws -> Self {
        let words = try container.decode([String].self, forKey: key)
        return try words.map { word in
            guard let value = Element(rawValue: word) else {
                let field = (container.codingPath + [key]).map(\.stringValue).joined(separator: ".")
                throw ConfigError(
                    field: field,
                    message: "names '\(word)'; use \(ValueKind.alternatives(Element.allCases.map(\.rawValue)))")
            }
            return value
        }
    }

    public func encode<K: CodingKey>(to container: inout KeyedEncodingContainer<K>, forKey key: K) throws {
        try container.encode(map(\.rawValue), forKey: key)
    }
}

extension OutputHead: SettingChoice {}
