// ParameterLayout: where each named tensor lives in the flat parameter buffer.
//
// One table drives both the sizes and the views: the model-level tensors before the blocks (the embedding),
// each block's `LayerTensor`s, and the tensors after them (the final norm, then the model's heads in the
// config's order), in Hugging Face's named_parameters order and names. The same offsets serve parameters,
// gradients, AdamW moments, checkpoints and allreduce buckets, and `Sizes` reads the same table in closed
// form (overflow checked, no loop over layers) for validation, memory plans and FLOP counts.
import Support

public struct TensorSpec: Equatable, Sendable {
    public let name: String
    public let shape: [Int]
    public let offset: Int
    public var count: Int { shape.reduce(1, *) }
    /// Weight decay applies to matrices (embeddings and heads included), not to the RMSNorm gains.
    public var decays: Bool { shape.count >= 2 }
}

/// An output head on the final norm's output. A model carries none, one or several, in the config's order.
public enum OutputHead: String, Codable, CaseIterable, Sendable {
    /// Next-token logits, lm_head.weight (vocab, dim): Hugging Face's LlamaForCausalLM.
    case lm = "lm_head"
    /// A reward model's scalar, score.weight (1, dim): LlamaForSequenceClassification with one label.
    case score
    /// PPO's value estimate per token, v_head.summary.weight (1, dim): TRL's value head, without its bias.
    case value

    public var tensorName: String {
        switch self {
        case .lm: "lm_head.weight"
        case .score: "score.weight"
        case .value: "v_head.summary.weight"
        }
    }

    /// Outputs per position: the vocabulary, or one scalar.
    public func rows(_ c: LlamaConfig) -> Int { self == .lm ? c.vocabSize : 1 }
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
    /// The table: what comes before the blocks (one unit), and after them (the last unit).
    static func leadingTensors(_ c: LlamaConfig) -> [(name: String, shape: [Int])] {
        [("model.embed_tokens.weight", [c.vocabSize, c.dim])]
    }

    static func trailingTensors(_ c: LlamaConfig) -> [(name: String, shape: [Int])] {
        [("model.norm.weight", [c.dim])] + c.heads.map { ($0.tensorName, [$0.rows(c), c.dim]) }
    }

    public let tensors: [TensorSpec]
    /// Total floats.
    public let count: Int
    public let embedding: TensorSpec
    public let finalNorm: TensorSpec
    /// The heads in the config's order, each with its tensor.
    public let heads: [(kind: OutputHead, tensor: TensorSpec)]
    /// layers[l][t.rawValue] is layer l's tensor t.
    private let layerSpecs: [[TensorSpec]]
    private let indexByName: [String: Int]

    public init(config c: LlamaConfig) {
        var specs: [TensorSpec] = []
        var offset = 0
        func add(_ entry: (name: String, shape: [Int])) -> TensorSpec {
            let spec = TensorSpec(name: entry.name, shape: entry.shape, offset: offset)
            offset += spec.count
            specs.append(spec)
            return spec
        }
        let leading = Self.leadingTensors(c).map(add)
        var layers: [[TensorSpec]] = []
        for l in 0..<c.nLayers {
            layers.append(LayerTensor.allCases.map { add(("model.layers.\(l).\($0.suffix)", $0.shape(c))) })
        }
        let trailing = Self.trailingTensors(c).map(add)
        embedding = leading[0]
        finalNorm = trailing[0]
        heads = Array(zip(c.heads, trailing.dropFirst())).map { (kind: $0.0, tensor: $0.1) }
        tensors = specs
        count = offset
        layerSpecs = layers
        indexByName = Dictionary(uniqueKeysWithValues: specs.enumerated().map { ($1.name, $0) })
        units =
            [leading.first!.offset..<(leading.last!.offset + leading.last!.count)]
            + layers.map { $0.first!.offset..<($0.last!.offset + $0.last!.count) }
            + [finalNorm.offset..<offset]
    }

    /// The model's units in layout order, each a contiguous flat range: the embedding, each block, then the
    /// final norm with the heads. Sharded training gathers and reduces parameters a unit at a time.
    public let units: [Range<Int>]

    /// Unit of block l.
    public static func unit(ofLayer l: Int) -> Int { l + 1 }

    public func layer(_ l: Int, _ tensor: LayerTensor) -> TensorSpec { layerSpecs[l][tensor.rawValue] }

    public func spec(named name: String) -> TensorSpec? { indexByName[name].map { tensors[$0] } }

    /// Refuses weights holding a NaN or an infinity, naming the first such tensor and where it came from: a
    /// damaged starting model must fail here, not as a NaN loss at step 1 or as ranks that "disagree".
    /// `held`: the parts of the layout `parameters` holds (all of it, or a rank's pieces end to end); the
    /// index in the error is within the tensor.
    public func checkFinite(_ parameters: FloatBuffer, held: HeldPieces? = nil, source: String) throws {
        for spec in tensors {
            for part in (held ?? .whole(count)).parts(of: spec.offset..<(spec.offset + spec.count)) {
                let values = UnsafeBufferPointer(start: parameters.pointer + part.local, count: part.range.count)
                if let i = values.firstIndex(where: { !$0.isFinite }) {
                    throw SafeTensorsError.nonFinite(
                        name: spec.name, file: source, value: values[i], index: part.range.lowerBound - spec.offset + i)
                }
            }
        }
    }

    /// The tensor of head `kind`, nil when the model does not carry it.
    public func head(_ kind: OutputHead) -> TensorSpec? { heads.first { $0.kind == kind }?.tensor }

    /// Parameters that count in 6·N FLOPs per token: all but the embedding table, which is a lookup.
    public var nonEmbeddingCount: Int { count - embedding.count }

    // MARK: - The same table in closed form

    /// The layout's totals without building it, overflow checked (nil when absurd): what validation, the
    /// memory plan and the FLOP count read, so that a new tensor or head changes them all at once.
    public struct Sizes: Equatable, Sendable {
        public let count: Int
        public let embedding: Int
        /// The largest unit (the embedding, one block, the final norm with the heads): what sharding gathers.
        public let largestUnit: Int
        public var nonEmbedding: Int { count - embedding }

        public init?(_ c: LlamaConfig) {
            func total(_ shapes: [[Int]]) -> Int? {
                let counts = shapes.map { CheckedSize.product($0) }
                guard counts.allSatisfy({ $0 != nil }) else { return nil }
                return CheckedSize.sum(counts.map { $0! })
            }
            guard let leading = total(ParameterLayout.leadingTensors(c).map(\.shape)),
                let block = total(LayerTensor.allCases.map { $0.shape(c) }),
                let blocks = CheckedSize.product(c.nLayers, block),
                let trailing = total(ParameterLayout.trailingTensors(c).map(\.shape)),
                let embedding = CheckedSize.product(ParameterLayout.leadingTensors(c)[0].shape),
                let count = CheckedSize.sum([leading, blocks, trailing])
            else { return nil }
            self.count = count
            self.embedding = embedding
            largestUnit = max(leading, block, trailing)
        }
    }

    /// Training FLOPs per token, PaLM's count as llm.c and nanoGPT use it: 6·N for the matmuls (N without the
    /// embedding table, every head included) plus 6·L·T·D for attention scores and values (T the sequence
    /// length, D = dim).
    public static func flopsPerToken(_ c: LlamaConfig, seqLen: Int) -> Double {
        6 * Double(Sizes(c)?.nonEmbedding ?? 0) + 6 * Double(c.nLayers) * Double(seqLen) * Double(c.dim)
    }
}
