// The KV-cached engine against the model's own full forward (every position, prefill in one chunk and in
// several), batch and thread invariance of whole generations, and the sampler against the distribution it
// claims, from the formulas in float64.
import Foundation
import Kernels
import Model
import Support
import Testing
import Tokenizer

@testable import Inference

/// A small tokenizer trained here.
func engineTokenizer() throws -> Tokenizer {
    var options = BPETrainerOptions()
    options.vocabSize = 320
    let text: [Substring] = [
        "the cat sat on the mat", "a dog ran in the park", "numbers like 12 and 345", "hello world again",
        "what is the capital of france", "paris is the capital",
    ]
    return try Tokenizer(model: BPETrainer.train(lines: text, options: options))
}

/// GQA (4 query heads over 2), weights wide enough (std 0.3) that near-ties between logits are rare.
func engineModel(vocab: Int = 200, maxSeqLen: Int = 96, seed: UInt64 = 3) throws -> LlamaModel {
    let config = LlamaConfig(
        dim: 32, nLayers: 2, nHeads: 4, nKVHeads: 2, vocabSize: vocab, ffnHiddenSize: 48, headDim: 8, normEps: 1e-5,
        ropeTheta: 10000, maxSeqLen: maxSeqLen)
    let model = try LlamaModel(config: config, purpose: .inference)
    model.initialize(seed: seed, std: 0.3)
    return model
}

@Suite struct EngineTests {
    /// Prefill of a prompt, then one given token at a time: the logits at every position equal the full
    /// forward's over the whole sequence, within 1e-5 of the largest logit. Chunked prefill (chunks of 7, the
    /// later ones attending over the cache) agrees too.
    @Test(arguments: [nil, 7])
    func cachedLogitsEqualTheFullForward(chunk: Int?) throws {
        let model = try engineModel()
        let V = model.config.vocabSize
        var r = SplitMix64(seed: 11)
        let sequence = (0..<60).map { _ in Int32(r.next() % UInt64(V)) }
        _ = try model.forward(
            tokens: sequence, targets: [Int32](repeating: LlamaModel.ignoreIndex, count: sequence.count), batch: 1,
            seqLen: sequence.count)
        let full = Array(model.outputs(of: .lm))
        let scale = full.map { abs($0) }.max()!
        let engine = try InferenceEngine(model: model, slots: 3, prefillChunk: chunk)
        let promptLength = 23
        var got = [Float]()
        // Slot 1, so a slot's offset into the cache is exercised; the prompt's logits at every position.
        try engine.prefill(slot: 1, tokens: Array(sequence[..<promptLength]), logitsFrom: 0) { first, logits in
            #expect(first == got.count / V)
            got += Array(logits)
        }
        for t in promptLength..<sequence.count {
            got += Array(try engine.decode([(slot: 1, token: sequence[t])]))
        }
        #expect(got.count == full.count)
        let worst = zip(got, full).map { abs($0 - $1) }.max()!
        #expect(worst <= 1e-5 * scale, "largest difference \(worst) against logits up to \(scale)")
    }

    /// A reward model (score head only): the engine's reward is the training forward's score at the last token,
    /// with the prefill in one chunk or in several; a language model has no score, a reward model no logits.
    @Test func rewardIsTheForwardsScoreAtTheLastToken() throws {
        var config = try engineModel().config
        config.heads = [.score]
        let model = try LlamaModel(config: config, purpose: .inference)
        model.initialize(seed: 5, std: 0.3)
        var r = SplitMix64(seed: 13)
        let tokens = (0..<45).map { _ in Int32(r.next() % UInt64(config.vocabSize)) }
        _ = try model.forward(
            tokens: tokens, targets: [Int32](repeating: LlamaModel.ignoreIndex, count: tokens.count), batch: 1,
            seqLen: tokens.count)
        let expected = model.outputs(of: .score)[tokens.count - 1]
        for chunk in [nil, 7] {
            let engine = try InferenceEngine(model: model, slots: 2, prefillChunk: chunk)
            let got = try engine.reward(tokens, slot: 1)
            #expect(
                abs(got - expected) <= 1e-5 * max(1, abs(expected)), "chunk \(chunk ?? 0): \(got) against \(expected)")
            #expect(engine.lengths == [0, 0])
            #expect(throws: InferenceError.noLanguageHead) { try engine.logprobs(prompt: [1, 2], completion: [3]) }
        }
        let language = try InferenceEngine(model: try engineModel(), slots: 1)
        #expect(throws: InferenceError.noScoreHead) { try language.reward([1, 2, 3]) }
    }

    /// A bf16 cache: prefill and decode read the same rounded keys and values, so the logits at every position,
    /// whichever path computed them, are within bf16's rounding of the full forward's, and not equal to them.
    @Test(arguments: [nil, 7])
    func bf16CacheIsWithinItsRounding(chunk: Int?) throws {
        let model = try engineModel()
        let V = model.config.vocabSize
        var r = SplitMix64(seed: 14)
        let sequence = (0..<50).map { _ in Int32(r.next() % UInt64(V)) }
        _ = try model.forward(
            tokens: sequence, targets: [Int32](repeating: LlamaModel.ignoreIndex, count: sequence.count), batch: 1,
            seqLen: sequence.count)
        let full = Array(model.outputs(of: .lm)), scale = full.map { abs($0) }.max()!
        let engine = try InferenceEngine(model: model, slots: 2, prefillChunk: chunk, cache: .bf16)
        var got = [Float]()
        try engine.prefill(slot: 1, tokens: Array(sequence[..<20]), logitsFrom: 0) { _, logits in got += Array(logits) }
        for t in 20..<sequence.count { got += Array(try engine.decode([(slot: 1, token: sequence[t])])) }
        let worst = zip(got, full).map { abs($0 - $1) }.max()!
        // (This model's wide weights make attention sharp, so the keys' rounding moves the logits by up to ~3%.)
        #expect(worst > 0 && worst < 0.05 * scale, "largest difference \(worst) against logits up to \(scale)")
        // Prefill (flash attention over the rounded rows) and decode (the bf16 cache kernel) agree: the logits
        // of the last 10 positions, prefilled in one go, equal those decoded one at a time.
        let again = try InferenceEngine(model: model, slots: 1, prefillChunk: chunk, cache: .bf16)
        var prefilled = [Float]()
        try again.prefill(slot: 0, tokens: sequence, logitsFrom: 40) { _, logits in prefilled += Array(logits) }
        let decoded = Array(got[(40 * V)...])
        let gap = zip(prefilled, decoded).map { abs($0 - $1) }.max()!
        #expect(gap <= 1e-5 * scale, "prefill and decode over the bf16 cache differ by \(gap)")
    }

    /// bf16 decode weights: on a model whose weights are bf16 values already, the very bits of fp32 decoding
    /// (widening is exact and the chains are the same); on any model, within bf16's rounding of fp32's logits.
    @Test func bf16DecodeIsFp32DecodeOfTheRoundedWeights() throws {
        let model = try engineModel()
        let V = model.config.vocabSize
        var r = SplitMix64(seed: 12)
        let sequence = (0..<40).map { _ in Int32(r.next() % UInt64(V)) }
        func decoded(_ precision: DecodePrecision) throws -> [Float] {
            let engine = try InferenceEngine(model: model, slots: 2, decodeWeights: precision)
            try engine.prefill(slot: 1, tokens: Array(sequence[..<10])) { _, _ in }
            var logits = [Float]()
            for t in 10..<sequence.count { logits += Array(try engine.decode([(slot: 1, token: sequence[t])])) }
            return logits
        }
        let (fp32, bf16) = (try decoded(.fp32), try decoded(.bf16))
        let scale = fp32.map { abs($0) }.max()!, worst = zip(fp32, bf16).map { abs($0 - $1) }.max()!
        #expect(worst > 0 && worst < 0.02 * scale, "largest difference \(worst) against logits up to \(scale)")
        let p = model.parameters.pointer
        for i in 0..<model.parameters.count { p[i] = lm_round_bf16(p[i]) }
        #expect(try decoded(.bf16) == decoded(.fp32))
    }

    /// Ragged prompts, two samples each, sampled with temperature, top-k and top-p: the same ids and log-probs,
    /// bit for bit, decoded one sequence at a time, 16 at once, and 16 at once on 2 threads.
    /// The same with bf16 decode weights and a bf16 cache.
    @Test(arguments: [(DecodePrecision.fp32, DecodePrecision.fp32), (.bf16, .bf16)])
    func generationDoesNotDependOnTheBatchOrThreads(weights: DecodePrecision, cache: DecodePrecision) throws {
        let tokenizer = try engineTokenizer()
        let model = try engineModel(vocab: tokenizer.vocabSize)
        let prompts = ["the cat", "a dog ran in the", "numbers", "hello world again and the cat sat", "paris", "what"]
        let requests = prompts.enumerated().flatMap { i, text in
            (0..<2).map { s in GenerationRequest(prompt: i, sample: s, ids: tokenizer.encode(text, bos: true)) }
        }
        let options = SamplingOptions(temperature: 0.9, topP: 0.95, topK: 20, maxTokens: 24, seed: 7)
        func run(slots: Int, threads: Int) throws -> [GenerationResult] {
            let engine = try InferenceEngine(
                model: model, slots: slots, threads: threads, decodeWeights: weights, cache: cache)
            return try BatchGenerator(engine: engine, tokenizer: tokenizer, options: options).run(requests)
        }
        let one = try run(slots: 1, threads: 1)
        #expect(one.map(\.prompt) == requests.map(\.prompt) && one.map(\.sample) == requests.map(\.sample))
        #expect(Set(one.map(\.ids)).count > 6, "samples of one prompt differ (their own streams)")
        for other in [try run(slots: 16, threads: 1), try run(slots: 16, threads: 2), try run(slots: 5, threads: 2)] {
            #expect(other.map(\.ids) == one.map(\.ids))
            #expect(other.map(\.logprobs) == one.map(\.logprobs))
            #expect(other.map(\.fullLogprobs) == one.map(\.fullLogprobs))
            #expect(other.map(\.finish) == one.map(\.finish))
        }
    }

    /// Sharded weights (PPO's generation_weights sharded): the model holds none of its parameters, every
    /// forward gathers each unit in order through its provider (here a copy into a slot poisoned between
    /// gathers) and agrees through the lockstep first; once its own work is done it gathers along for as long as
    /// the lockstep says another rank still works. The samples are the whole model's, bit for bit.
    @Test(arguments: [DecodePrecision.fp32, .bf16])
    func shardedWeightsGenerateWhatWholeWeightsDo(weights: DecodePrecision) throws {
        let tokenizer = try engineTokenizer()
        let whole = try engineModel(vocab: tokenizer.vocabSize)
        let requests = ["the cat", "a dog ran in the", "numbers", "hello world again and the cat sat", "paris"]
            .enumerated().map { GenerationRequest(prompt: $0, sample: 0, ids: tokenizer.encode($1, bos: true)) }
        let options = SamplingOptions(temperature: 0.9, topP: 0.95, topK: 20, maxTokens: 24, seed: 7)
        let expected = try BatchGenerator(
            engine: try InferenceEngine(model: whole, slots: 3, decodeWeights: weights), tokenizer: tokenizer,
            options: options
        ).run(requests)

        let sharded = try LlamaModel(config: whole.config, purpose: .inference, parameterPieces: HeldPieces([]))
        let gathers = SlotGathers(whole)
        sharded.unitWeights = gathers
        #expect(throws: InferenceError.shardedWithoutGathers) { try InferenceEngine(model: sharded, slots: 3) }
        var (busy, othersBusyFor) = (0, 3)
        let lockstep: (LockstepState) throws -> LockstepState = { state in
            if state == .working {
                busy += 1
                return .working
            }
            othersBusyFor -= 1
            return othersBusyFor >= 0 ? .working : .done
        }
        let engine = try InferenceEngine(model: sharded, slots: 3, decodeWeights: weights, lockstep: lockstep)
        let results = try BatchGenerator(engine: engine, tokenizer: tokenizer, options: options).run(requests)
        #expect(results.map(\.ids) == expected.map(\.ids))
        #expect(results.map(\.fullLogprobs) == expected.map(\.fullLogprobs))
        let units = whole.layout.units.count
        #expect(busy > requests.count, "a forward for each prompt's prefill, and the decodes")
        #expect(gathers.order == Array([[Int]](repeating: Array(0..<units), count: busy + 3).joined()))

        // A failure on this rank between forwards (a prompt token outside the vocabulary) is announced, so the others
        // stop; another rank's failure stops this one at its next forward.
        var said: [LockstepState] = []
        let failing = try InferenceEngine(
            model: sharded, slots: 3, decodeWeights: weights,
            lockstep: {
                said.append($0)
                return $0
            })
        let bad = GenerationRequest(prompt: 9, sample: 0, ids: [1, Int32(whole.config.vocabSize)])
        #expect(throws: TokenizerError.self) {
            try BatchGenerator(engine: failing, tokenizer: tokenizer, options: options).run(requests + [bad])
        }
        #expect(said.last == .failed && said.dropLast().allSatisfy { $0 == .working }, "\(said)")
        var forwards = 0
        let peer = try InferenceEngine(
            model: sharded, slots: 3, decodeWeights: weights,
            lockstep: { _ in
                forwards += 1
                return forwards > 4 ? .failed : .working
            })
        #expect(throws: InferenceError.peerFailed) {
            try BatchGenerator(engine: peer, tokenizer: tokenizer, options: options).run(requests)
        }
        #expect(forwards == 5, "no forward runs after the failure is heard, and none is announced back")
    }

    /// Greedy decoding through the engine takes the full forward's argmax at every step.
    @Test func greedyFollowsTheFullForwardsArgmax() throws {
        let tokenizer = try engineTokenizer()
        let model = try engineModel(vocab: tokenizer.vocabSize)
        let prompt = tokenizer.encode("the cat sat", bos: true)
        let options = SamplingOptions(temperature: 0, maxTokens: 20)
        let engine = try InferenceEngine(model: model, slots: 2)
        let result = try BatchGenerator(engine: engine, tokenizer: tokenizer, options: options).run([
            GenerationRequest(prompt: 0, sample: 0, ids: prompt)
        ])[0]
        var ids = prompt
        let V = model.config.vocabSize
        for (i, id) in result.ids.enumerated() {
            _ = try model.forward(
                tokens: ids, targets: [Int32](repeating: LlamaModel.ignoreIndex, count: ids.count), batch: 1,
                seqLen: ids.count)
            let row = Array(model.outputs(of: .lm)[((ids.count - 1) * V)..<(ids.count * V)])
            #expect(Int32(row.indices.max { row[$0] < row[$1] }!) == id, "token \(i)")
            // fullLogprob at T = 1: log_softmax from the formula, in double.
            let top = Double(row.max()!), lse = top + log(row.reduce(0.0) { $0 + exp(Double($1) - top) })
            #expect(abs(result.fullLogprobs[i] - (Double(row[Int(id)]) - lse)) < 1e-4)
            ids.append(id)
        }
        #expect(result.logprobs.allSatisfy { $0 == 0 }, "greedy draws from a point mass")
        #expect(result.finish == .length || result.finish == .eos)
    }

    /// A stop string ends the sample and is cut from its text; max tokens and the context end the others.
    @Test func stopStringsAndLimits() throws {
        let tokenizer = try engineTokenizer()
        let model = try engineModel(vocab: tokenizer.vocabSize, maxSeqLen: 40)
        let engine = try InferenceEngine(model: model, slots: 4)
        let prompt = tokenizer.encode("the cat", bos: true)
        let free = try BatchGenerator(
            engine: engine, tokenizer: tokenizer, options: SamplingOptions(temperature: 0, maxTokens: 12)
        ).run([GenerationRequest(prompt: 0, sample: 0, ids: prompt)])[0]
        try #require(free.text.count >= 3 && free.finish == .length, "\(free.text)")
        // A stop string taken from inside the free text: the stopped text is the free text up to it.
        let chars = Array(free.text)
        let stop = String(chars[(chars.count / 2)..<(chars.count / 2 + 2)])
        let stopped = try BatchGenerator(
            engine: engine, tokenizer: tokenizer, options: SamplingOptions(temperature: 0, maxTokens: 12, stop: [stop])
        ).run([GenerationRequest(prompt: 0, sample: 0, ids: prompt)])[0]
        #expect(stopped.finish == .stop)
        #expect(free.text.hasPrefix(stopped.text + stop) && !stopped.text.contains(stop))
        // The context: 40 tokens in all.
        let long = try BatchGenerator(
            engine: engine, tokenizer: tokenizer, options: SamplingOptions(temperature: 0, maxTokens: 100)
        ).run([GenerationRequest(prompt: 0, sample: 0, ids: prompt)])[0]
        #expect(long.finish == .context || long.finish == .eos)
        if long.finish == .context { #expect(prompt.count + long.ids.count == 40) }
    }
}

@Suite struct SamplerTests {
    /// 40,000 draws at one position against softmax(logits / T) restricted to top-k, then top-p, renormalised,
    /// computed here from the formulas in float64: Pearson's chi-square below the 0.999 quantile, every reported
    /// log-prob equal to the formula's, and nothing outside the kept set ever drawn.
    @Test(arguments: [(0.7, 0.9, 8), (1.3, 1.0, 5), (1.0, 0.6, 0), (0.5, 1.0, 0)])
    func drawsMatchTheTruncatedDistribution(temperature: Double, topP: Double, topK: Int) throws {
        let logits: [Float] = [2.0, 1.5, 1.5, 0.3, -0.2, 3.1, 0.0, -1.0, 2.2, 0.9, 1.1, -3.0]
        let options = SamplingOptions(temperature: temperature, topP: topP, topK: topK)
        // The reference: sort by probability (ties by id), keep k, keep the nucleus, renormalise.
        let z = logits.map { Double($0) / temperature }
        let lse = log(z.map { exp($0) }.reduce(0, +))
        let order = z.indices.sorted { z[$0] != z[$1] ? z[$0] > z[$1] : $0 < $1 }
        var kept = Array(order.prefix(topK > 0 ? topK : z.count))
        let keptMass = kept.map { exp(z[$0] - lse) }.reduce(0, +)
        var mass = 0.0, nucleus: [Int] = []
        for i in kept where mass < topP * keptMass {
            nucleus.append(i)
            mass += exp(z[i] - lse)
        }
        kept = nucleus
        let expected = Dictionary(uniqueKeysWithValues: kept.map { ($0, exp(z[$0] - lse) / mass) })
        var counts = [Int: Int]()
        let draws = 40_000
        try logits.withUnsafeBufferPointer { row in
            for s in 0..<draws {
                var rng = Sampler.stream(seed: 5, prompt: 0, sample: s)
                let t = Sampler.sample(row, options, rng: &rng)
                let id = Int(t.id)
                let p = try #require(expected[id], "drew \(id), outside the kept set \(kept)")
                counts[id, default: 0] += 1
                if s < 50 {
                    #expect(abs(t.logprob - log(p)) < 1e-9)
                    #expect(abs(t.fullLogprob - (z[id] - lse)) < 1e-9)
                }
            }
        }
        let chi = expected.map { id, p in pow(Double(counts[id] ?? 0) - p * Double(draws), 2) / (p * Double(draws)) }
            .reduce(0, +)
        // 0.999 quantiles of chi-square with k − 1 degrees of freedom, k ≤ 12.
        let critical = [0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59, 31.26]
        if kept.count > 1 { #expect(chi < critical[kept.count - 1], "chi-square \(chi) over \(kept.count) ids") }
    }

    /// A temperature so small that the threshold's step vanishes in rounding still ends, at the largest logit.
    @Test func aTinyTemperatureTakesTheLargestLogit() {
        let logits: [Float] = [10, 9.5, 10.2, 3]
        var rng = Sampler.stream(seed: 1, prompt: 0, sample: 0)
        let t = logits.withUnsafeBufferPointer {
            Sampler.sample($0, SamplingOptions(temperature: 1e-20, topP: 0.9, topK: 3), rng: &rng)
        }
        #expect(t.id == 2 && t.logprob == 0)
    }

    /// The nucleus search by threshold gives the same set as sorting the whole vocabulary, on a row of 32,000.
    @Test func largeVocabularyTruncationIsExact() throws {
        var r = SplitMix64(seed: 9)
        let logits = (0..<32000).map { _ in Float(r.nextGaussian() * 3) }
        for (t, p, k) in [(1.0, 0.9, 0), (0.7, 0.95, 50), (1.0, 1.0, 40), (2.0, 0.5, 0)] {
            let o = SamplingOptions(temperature: t, topP: p, topK: k)
            let z = logits.map { Double($0) / t }
            let top = z.max()!, total = z.map { exp($0 - top) }.reduce(0, +)
            let got = logits.withUnsafeBufferPointer {
                Sampler.truncated($0, top: Double(logits.max()!), total: total, o)
            }
            var order = z.indices.sorted { z[$0] != z[$1] ? z[$0] > z[$1] : $0 < $1 }
            if k > 0 { order = Array(order.prefix(k)) }
            let keptMass = k > 0 ? order.map { exp(z[$0] - top) }.reduce(0, +) : total
            var mass = 0.0, nucleus: [Int] = []
            for i in order where mass < p * keptMass {
                nucleus.append(i)
                mass += exp(z[i] - top)
            }
            #expect(got.map(\.id) == nucleus, "T \(t) p \(p) k \(k)")
        }
    }
}

/// A sharded model's unit gathers, in one process: unit u copied from `whole` into a slot that is poisoned
/// when the unit is released, with the order asked for.
final class SlotGathers: UnitWeights {
    let whole: LlamaModel
    let slot: FloatBuffer
    private(set) var order: [Int] = []

    init(_ whole: LlamaModel) {
        self.whole = whole
        slot = FloatBuffer(count: whole.layout.units.map(\.count).max()!)
        slot.pointer.update(repeating: .nan, count: slot.count)
    }

    func parametersForForward(unit u: Int) -> UnsafeMutablePointer<Float> {
        let range = whole.layout.units[u]
        order.append(u)
        slot.pointer.update(from: whole.parameters.pointer + range.lowerBound, count: range.count)
        return slot.pointer
    }

    func forwardFinished(unit: Int) { slot.pointer.update(repeating: .nan, count: slot.count) }

    func beginBackward(unit: Int) -> (parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        preconditionFailure("inference has no backward")
    }

    func backwardFinished(unit: Int) {}
}
