// finetune.init_from: the starting weights of a fine-tuning stage, from a Hugging Face directory or one of our
// checkpoints (read by the parameters-only reader: no optimizer state, no collective). Every rank reads the
// same files; the trainer's agreement check proves they hold the same model afterwards.
import Checkpoint
import Foundation
import Model
import Support

/// Copies a starting model's tensors into `model` by name and shape: from a Hugging Face directory or one of
/// our checkpoints (step directory with manifest.json). A reward model or a policy with a value head may start
/// from a language model: a scalar head (score, value) the source lacks keeps its fresh initialisation.
public func loadInitialWeights(from path: String, into model: LlamaModel, log: (String) -> Void) throws {
    let source: LlamaModel
    if FileManager.default.fileExists(atPath: path + "/manifest.json") {
        source = try CheckpointReader.loadModel(path).1
    } else if FileManager.default.fileExists(atPath: path + "/config.json") {
        source = try HuggingFace.loadModel(directory: path)
    } else if case let reason = UnreadablePath.reason(path), reason != UnreadablePath.directoryReason {
        throw TrainingError("\(path): finetune.init_from cannot be read: \(reason)")
    } else {
        throw TrainingError("\(path): neither a checkpoint (manifest.json) nor a Hugging Face directory (config.json)")
    }
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
    for spec in model.layout.tensors {
        if let from = source.layout.spec(named: spec.name), from.shape == spec.shape {
            model.parameters.pointer.advanced(by: spec.offset).update(
                from: source.parameters.pointer + from.offset, count: spec.count)
        } else if model.layout.heads.contains(where: { $0.tensor == spec && $0.kind != .lm })
            && source.layout.spec(named: spec.name) == nil
        {
            fresh.append(spec.name)
        } else {
            let found = source.layout.spec(named: spec.name).map { "has shape \($0.shape)" } ?? "is missing"
            throw TrainingError(
                "\(path): tensor \(spec.name) \(found), this model needs \(spec.shape); does finetune.init_from match the model block?"
            )
        }
    }
    log("initialised from \(path)\(fresh.isEmpty ? "" : "; \(fresh.joined(separator: ", ")) freshly initialised")")
}
