// BatchGenerator: continuous batching over the engine's slots.
//
// Requests wait in order; whenever a slot is free the next one is prefilled into it and its first token
// sampled from the prompt's last logits; then every active sequence advances one token in a single decode
// call. A sequence that ends (</s>, a stop string, max tokens, the context) leaves its slot at once and the
// next waiting prompt takes it, so the batch stays full without padding to the longest sequence.
// What this is not: the command (prompts, files, ranks: Commands/GenerateCommand.swift).
import Foundation
import Support
import Tokenizer

public struct GenerationRequest: Sendable {
    public var prompt: Int
    public var sample: Int
    public var ids: [Int32]

    public init(prompt: Int, sample: Int, ids: [Int32]) { (self.prompt, self.sample, self.ids) = (prompt, sample, ids) }
}

public enum FinishReason: String, Codable, Sendable {
    /// The model's end-of-sequence token (not included).
    case eos
    /// A stop string appeared (the text ends before it).
    case stop
    /// max tokens.
    case length
    /// The context (the model's max_seq_len) is full.
    case context
}

public struct GenerationResult: Sendable {
    public var prompt: Int
    public var sample: Int
    public var ids: [Int32]
    public var text: String
    public var finish: FinishReason
    /// Per new token: under the distribution drawn from, and log_softmax(logits / T) untruncated.
    public var logprobs: [Double]
    public var fullLogprobs: [Double]
}

public final class BatchGenerator {
    public let engine: InferenceEngine
    public let tokenizer: Tokenizer
    public let options: SamplingOptions
    /// Tokens decoded so far (prefill excluded), for the progress line.
    public private(set) var decodedTokens = 0

    public init(engine: InferenceEngine, tokenizer: Tokenizer, options: SamplingOptions) {
        (self.engine, self.tokenizer, self.options) = (engine, tokenizer, options)
    }

    private struct Active {
        var request: GenerationRequest
        var rng: SplitMix64
        /// The prompt's own text, so that the continuation's is what follows it (its first space included).
        var promptText: String
        var ids: [Int32] = []
        var logprobs: [Double] = []
        var fullLogprobs: [Double] = []
    }

    /// Every request's result, in request order; `progress(finished)` after each one ends.
    public func run(_ requests: [GenerationRequest], progress: (Int) -> Void = { _ in }) throws -> [GenerationResult] {
        let results: [GenerationResult]
        do {
            results = try generate(requests, progress: progress)
        } catch InferenceError.peerFailed {
            throw InferenceError.peerFailed
        } catch {
            // Sharded weights: the other ranks must not wait in the lockstep for this one.
            engine.abandonLockstep()
            throw error
        }
        // Sharded weights: this rank's forwards are done; it gathers along while other ranks still decode.
        try engine.finishLockstep()
        return results
    }

    private func generate(_ requests: [GenerationRequest], progress: (Int) -> Void) throws -> [GenerationResult] {
        var results = [GenerationResult?](repeating: nil, count: requests.count)
        var waiting = requests.indices.makeIterator()
        var active = [Int: (index: Int, state: Active)]()  // slot → request
        var free = Array((0..<engine.slots).reversed())
        var finished = 0
        let V = engine.model.config.vocabSize

        // Appends a sampled token; the result when the sequence ends with it.
        func advance(_ state: inout Active, _ token: SampledToken, slotLength: Int) throws -> FinishReason? {
            if token.id == tokenizer.eosId { return .eos }
            state.ids.append(token.id)
            state.logprobs.append(token.logprob)
            state.fullLogprobs.append(token.fullLogprob)
            if !options.stop.isEmpty, try stopIndex(in: continuation(state)) != nil { return .stop }
            if state.ids.count >= options.maxTokens { return .length }
            // The sequence, this token included, fills the context: it could not be fed back (to score it).
            if slotLength + 1 >= engine.maxLength { return .context }
            return nil
        }
        func finish(_ slot: Int, _ index: Int, _ state: Active, _ reason: FinishReason) throws {
            var text = try continuation(state)
            if reason == .stop, let cut = stopIndex(in: text) { text = String(text[..<cut]) }
            results[index] = GenerationResult(
                prompt: state.request.prompt, sample: state.request.sample, ids: state.ids, text: text,
                finish: reason, logprobs: state.logprobs, fullLogprobs: state.fullLogprobs)
            engine.release(slot: slot)
            free.append(slot)
            active[slot] = nil
            finished += 1
            progress(finished)
        }

        while true {
            // Fill the free slots from the queue.
            while let slot = free.last, let index = waiting.next() {
                free.removeLast()
                let request = requests[index]
                var state = Active(
                    request: request,
                    rng: Sampler.stream(seed: options.seed, prompt: request.prompt, sample: request.sample),
                    promptText: try tokenizer.decode(request.ids))
                guard options.maxTokens > 0, request.ids.count < engine.maxLength else {
                    active[slot] = (index, state)
                    try finish(slot, index, state, options.maxTokens > 0 ? .context : .length)
                    continue
                }
                var first: SampledToken?
                try engine.prefill(slot: slot, tokens: request.ids) { _, logits in
                    first = Sampler.sample(logits, options, rng: &state.rng)
                }
                active[slot] = (index, state)
                if let reason = try advance(&state, first!, slotLength: engine.lengths[slot]) {
                    try finish(slot, index, state, reason)
                } else {
                    active[slot] = (index, state)
                }
            }
            guard !active.isEmpty else { break }
            // One token for every active sequence, in slot order (any order gives the same bits).
            let slots = active.keys.sorted()
            let logits = try engine.decode(slots.map { ($0, active[$0]!.state.ids.last!) })
            decodedTokens += slots.count
            for (row, slot) in slots.enumerated() {
                var (index, state) = active[slot]!
                let token = Sampler.sample(
                    UnsafeBufferPointer(rebasing: logits[(row * V)..<((row + 1) * V)]), options, rng: &state.rng)
                if let reason = try advance(&state, token, slotLength: engine.lengths[slot]) {
                    try finish(slot, index, state, reason)
                } else {
                    active[slot] = (index, state)
                }
            }
        }
        return results.map { $0! }
    }

    /// The text the new tokens add after the prompt's.
    private func continuation(_ state: Active) throws -> String {
        let whole = try tokenizer.decode(state.request.ids + state.ids)
        guard whole.hasPrefix(state.promptText) else { return try tokenizer.decode(state.ids) }
        return String(whole.dropFirst(state.promptText.count))
    }

    /// Where the first stop string begins in `text`, if one appears.
    private func stopIndex(in text: String) -> String.Index? {
        options.stop.compactMap { text.range(of: $0)?.lowerBound }.min()
    }
}
