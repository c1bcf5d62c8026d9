// Sampling text from a trained model, so a person can see it learn: temperature and nucleus (top-p)
// sampling, greedy at temperature 0. No KV cache yet: the arena is planned once for the longest sequence and
// each new token reruns the causal forward (positions after the last token cannot affect it).
// What this is not: training; the module sits beside Training so that FineTune and the later stages
// (rejection sampling, PPO) can generate with the model they train.
import Foundation
import Model
import Support
import Tokenizer

public enum Generator {
    /// `prompt` continued; a prompt that leaves no room in the context is handled as `truncation` says.
    public static func generate(
        model: LlamaModel, tokenizer: Tokenizer, prompt: String, maxTokens: Int,
        temperature: Double, topP: Double, seed: UInt64, truncation: Truncation = .refuse, what: String = "the prompt"
    ) throws -> String {
        let promptIds = try truncation.apply(
            tokenizer.encode(prompt, bos: true), limit: model.config.maxSeqLen - 1, what: what)
        let continuation = try generate(
            model: model, tokenizer: tokenizer, promptIds: promptIds, maxTokens: maxTokens,
            temperature: temperature, topP: topP, seed: seed)
        // Decoding the whole sequence keeps the space between prompt and continuation (the decoder drops
        // only the first piece's dummy-prefix space).
        return continuation.isEmpty ? prompt : try tokenizer.decode(promptIds + continuation)
    }

    /// The tokens sampled after `promptIds`, up to `maxTokens`, the context, or </s> (not included).
    public static func generate(
        model: LlamaModel, tokenizer: Tokenizer, promptIds: [Int32], maxTokens: Int,
        temperature: Double, topP: Double, seed: UInt64
    ) throws -> [Int32] {
        var ids = promptIds
        let limit = min(model.config.maxSeqLen, ids.count + maxTokens)
        guard ids.count < limit else { return [] }
        var rng = SplitMix64(seed: seed)
        let V = model.config.vocabSize
        guard model.config.heads.contains(.lm) else { throw GenerationError.noLanguageHead }
        let targets = [Int32](repeating: LlamaModel.ignoreIndex, count: limit)
        while ids.count < limit {
            let padded = ids + [Int32](repeating: 0, count: limit - ids.count)
            _ = try model.forward(tokens: padded, targets: targets, batch: 1, seqLen: limit)
            let row = Array(model.outputs(of: .lm)[((ids.count - 1) * V)..<(ids.count * V)])
            let next = sample(row, temperature: temperature, topP: topP, rng: &rng)
            if next == tokenizer.eosId { break }
            ids.append(next)
        }
        return Array(ids[promptIds.count...])
    }

    static func sample(_ logits: [Float], temperature: Double, topP: Double, rng: inout SplitMix64) -> Int32 {
        if temperature <= 0 { return Int32(logits.indices.max { logits[$0] < logits[$1] }!) }
        let m = Double(logits.max()!)
        var probs = logits.map { exp((Double($0) - m) / temperature) }
        let total = probs.reduce(0, +)
        probs = probs.map { $0 / total }
        let order = probs.indices.sorted { probs[$0] > probs[$1] }
        var kept: [Int] = [], mass = 0.0
        for i in order {
            kept.append(i)
            mass += probs[i]
            if mass >= topP { break }
        }
        var u = rng.nextUnit() * mass
        for i in kept {
            u -= probs[i]
            if u <= 0 { return Int32(i) }
        }
        return Int32(kept.last!)
    }
}

public enum GenerationError: Error, CustomStringConvertible {
    case noLanguageHead

    public var description: String {
        switch self {
        case .noLanguageHead: "the model has no lm_head to generate with (a reward model scores, it does not generate)"
        }
    }
}
