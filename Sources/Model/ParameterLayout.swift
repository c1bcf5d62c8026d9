// ParameterLayout: where each named tensor lives in the flat parameter buffer.
//
// One table (`LayerTensor` and the three model-level tensors) drives both the sizes and the views, in
// Hugging Face's named_parameters order and names, so the same offsets serve parameters, gradients,
// AdamW moments, checkpoints and allreduce buckets.

public struct TensorSpec: Equatable, Sendable {
    public let name: String
    public let shape: [Int]
    public let offset: Int
    public var count: Int { shape.reduce(1, *) }
    /// Weight decay applies to matrices (embeddings and lm_head included), not to the RMSNorm gains.
    public var decays: Bool { shape.count >= 2 }
}

/// The tensors of one decoder layer, in Hugging Face module order.
public enum LayerTensor: Int, CaseIterable, Sendable {
    case q, k, v, o, gate, up, down, attentionNorm, ffnNorm

    public var suffix: String {
        switch self {
        case .q: "self_attn.q_proj.weight"
        case .k: "self_attn.k_proj.weight"
        case .v: "self_attn.v_proj.weight"
        case .o: "self_attn.o_proj.weight"
        case .gate: "mlp.gate_proj.weight"
        case .up: "mlp.up_proj.weight"
        case .down: "mlp.down_proj.weight"
        case .attentionNorm: "input_layernorm.weight"
        case .ffnNorm: "post_attention_layernorm.weight"
        }
    }

    /// Linear weights are [out_features, in_features], as torch.nn.Linear stores them.
    public func shape(_ c: LlamaConfig) -> [Int] {
        switch self {
        case .q: [c.qDim, c.dim]
        case .k, .v: [c.kvDim, c.dim]
        case .o: [c.dim, c.qDim]
        case .gate, .up: [c.ffnHiddenSize, c.dim]
        case .down: [c.dim, c.ffnHiddenSize]
        case .attentionNorm, .ffnNorm: [c.dim]
        }
    }
}

public struct ParameterLayout: Sendable {
    public let tensors: [TensorSpec]
    /// Total floats.
    public let count: Int
    public let embedding: TensorSpec
    public let finalNorm: TensorSpec
    /// The output head: lm_head.weight (vocab, dim), or score.weight (1, dim) for a reward model.
    public let lmHead: TensorSpec
    /// layers[l][t.rawValue] is layer l's tensor t.
    private let layerSpecs: [[TensorSpec]]
    private let indexByName: [String: Int]

    public init(config c: LlamaConfig) {
        var specs: [TensorSpec] = []
        var offset = 0
        func add(_ name: String, _ shape: [Int]) -> TensorSpec {
            let spec = TensorSpec(name: name, shape: shape, offset: offset)
            offset += spec.count
            specs.append(spec)
            return spec
        }
        embedding = add("model.embed_tokens.weight", [c.vocabSize, c.dim])
        var layers: [[TensorSpec]] = []
        for l in 0..<c.nLayers {
            layers.append(LayerTensor.allCases.map { add("model.layers.\(l).\($0.suffix)", $0.shape(c)) })
        }
        finalNorm = add("model.norm.weight", [c.dim])
        lmHead = c.rewardHead ? add("score.weight", [1, c.dim]) : add("lm_head.weight", [c.vocabSize, c.dim])
        tensors = specs
        count = offset
        layerSpecs = layers
        indexByName = Dictionary(uniqueKeysWithValues: specs.enumerated().map { ($1.name, $0) })
        units = [embedding.offset..<(embedding.offset + embedding.count)]
            + layers.map { $0.first!.offset..<($0.last!.offset + $0.last!.count) }
            + [finalNorm.offset..<offset]
    }

    /// The model's units in layout order, each a contiguous flat range: the embedding, each block, then the
    /// final norm with the head. Sharded training gathers and reduces parameters a unit at a time.
    public let units: [Range<Int>]

    /// Unit of block l.
    public static func unit(ofLayer l: Int) -> Int { l + 1 }

    public func layer(_ l: Int, _ tensor: LayerTensor) -> TensorSpec { layerSpecs[l][tensor.rawValue] }

    public func spec(named name: String) -> TensorSpec? { indexByName[name].map { tensors[$0] } }

    /// Parameters that count in 6·N FLOPs per token: all but the embedding table, which is a lookup.
    public var nonEmbeddingCount: Int { count - embedding.count }
}
