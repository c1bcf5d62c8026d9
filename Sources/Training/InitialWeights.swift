// finetune.init_from: the starting weights of a fine-tuning stage, from a Hugging Face directory or one of
// our checkpoints. Each rank reads only the byte ranges of the tensors it holds (all of them when replicated,
// its pieces under sharding `full`) straight into its parameter buffer, through the sources' bounded staging
// (SafeTensorsFile's 1M-element chunks, none for float32 data; a checkpoint's 8 MB hashing buffer). No rank
// holds a second model, nothing is broadcast, and nothing is drawn from the seed but a head the source lacks.
import Checkpoint
import Foundation
import Model
import Support

/// Opens `path` as a weight source: one of our checkpoints (a step directory with manifest.json) or a
/// Hugging Face directory (config.json); the error says which it is not, or why it cannot be read.
public func openWeightSource(_ path: String, purpose: String = "finetune.init_from") throws -> WeightSource {
    if FileManager.default.fileExists(atPath: path + "/manifest.json") { return try CheckpointWeights(path) }
    if FileManager.default.fileExists(atPath: path + "/config.json") { return try HuggingFaceWeights(directory: path) }
    if case let reason = UnreadablePath.reason(path), reason != UnreadablePath.directoryReason {
        throw TrainingError("\(path): \(purpose) cannot be read: \(reason)")
    }
    throw TrainingError("\(path): neither a checkpoint (manifest.json) nor a Hugging Face directory (config.json)")
}

/// Fills the parameters `model` holds (its `parameterPieces`) from the starting model at `path`, by tensor
/// name and shape. A reward model or a policy with a value head may start from a language model: a scalar head
/// (score, value) the source lacks is drawn from `seed`, exactly as a fresh model's would be.
public func loadInitialWeights(from path: String, into model: LlamaModel, seed: UInt64, log: (String) -> Void) throws {
    let source = try openWeightSource(path)
    // Fields that change what the weights compute without changing a shape: a model trained with another
    // rotary base, epsilon or a shorter context would load and train without a word.
    let (s, m) = (source.config, model.config)
    var mismatches: [String] = []
    if s.ropeTheta != m.ropeTheta { mismatches.append("rope_theta \(s.ropeTheta) there, \(m.ropeTheta) here") }
    if s.normEps != m.normEps { mismatches.append("norm_eps \(s.normEps) there, \(m.normEps) here") }
    if s.maxSeqLen < m.maxSeqLen {
        mismatches.append("max_seq_len \(s.maxSeqLen) there (max_position_embeddings), \(m.maxSeqLen) here")
    }
    for (field, theirs, ours) in [
        ("dim", s.dim, m.dim), ("n_layers", s.nLayers, m.nLayers), ("n_heads", s.nHeads, m.nHeads),
        ("n_kv_heads", s.nKVHeads, m.nKVHeads), ("head_dim", s.headDim, m.headDim),
        ("vocab_size", s.vocabSize, m.vocabSize),
        ("ffn_hidden_size", s.ffnHiddenSize, m.ffnHiddenSize),
    ] where theirs != ours {
        mismatches.append("\(field) \(theirs) there, \(ours) here")
    }
    guard mismatches.isEmpty else {
        throw TrainingError(
            "\(path): finetune.init_from disagrees with the model block: \(mismatches.joined(separator: "; ")); make the model block match the starting model"
        )
    }
    var fresh: [String] = []
    var fromScore = false
    let held = model.parameterPieces
    for spec in model.layout.tensors {
        // A value head starts from a reward model's score head (Llama 2's value model is its reward model).
        let valueFromScore =
            spec.name == OutputHead.value.tensorName && source.shape(of: spec.name) == nil
            && source.shape(of: OutputHead.score.tensorName) == spec.shape
        let name = valueFromScore ? OutputHead.score.tensorName : spec.name
        let shape = source.shape(of: name)
        if shape == spec.shape {
            for part in held.parts(of: spec.offset..<(spec.offset + spec.count)) {
                let elements = (part.range.lowerBound - spec.offset)..<(part.range.upperBound - spec.offset)
                try source.read(name, elements: elements, into: model.parameters.pointer + part.local)
            }
            if valueFromScore { fromScore = true }
        } else if model.layout.heads.contains(where: { $0.tensor == spec && $0.kind != .lm }) && shape == nil {
            fresh.append(spec.name)
        } else {
            let found = shape.map { "has shape \($0)" } ?? "is missing"
            throw TrainingError(
                "\(path): tensor \(spec.name) \(found), this model needs \(spec.shape); does finetune.init_from match the model block?"
            )
        }
    }
    if !fresh.isEmpty { model.initialize(seed: seed, only: Set(fresh)) }
    try model.checkFinite(source: path)
    let value = fromScore ? "; \(OutputHead.value.tensorName) from its \(OutputHead.score.tensorName)" : ""
    log(
        "initialised from \(path)\(value)\(fresh.isEmpty ? "" : "; \(fresh.joined(separator: ", ")) freshly initialised")"
    )
}
