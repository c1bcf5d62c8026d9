// PPO (Llama 2 §3.2.3) as a training objective: one optimizer step per mini-batch, ppo.batch_size /
// ppo.mini_batch_size of them per iteration. The first step of an iteration collects its rollouts:
//  1. sample one response per prompt from the policy (or take the iteration's fixed rollouts, --rollouts);
//  2. score each with the R_c gate: the safety model's raw score on a safety prompt or when σ(r_s) < threshold,
//     else the helpfulness model's; whitened over the batch on every rank;
//  3. the old policy's and the reference's log-probs, log_softmax(logits / T) at each response token, and the
//     value model's values at the positions that predict them;
//  4. per-token rewards, GAE advantages (whitened over the batch's tokens) and returns (PPOMath).
// Every step then trains both models on its mini-batch: the policy on the clipped surrogate, the value model
// on the clipped value loss, each with its own AdamW and clipping (the trainer's StageModels).
//
// Rank r holds the rollouts at positions r, r + N, … of the iteration's order (a seeded shuffle; file order
// with --rollouts), and mini-batch j is positions [j·m, (j+1)·m), so a mini-batch is spread evenly over the
// ranks and no rollout crosses between them. Which prompt a position samples, and its sampling stream, depend
// on (seed, iteration, position) only, so the iteration is the same for any rank count.
// A rank's rollouts are kept in the checkpoint directory, so a run resumed part-way through an iteration
// finishes it on the same rollouts.
import Configuration
import Distributed
import Foundation
import Inference
import Model
import Support
import Tokenizer
import Training

/// A prompt of the PPO set: its tokens (the template's, ending where the answer starts) and its safety tag.
public struct PPOPrompt: Sendable, Equatable {
    public var ids: [Int32]
    public var safety: Bool

    public init(ids: [Int32], safety: Bool) { (self.ids, self.safety) = (ids, safety) }
}

/// A rollout: a prompt and the policy's response to it (its tokens, the end-of-sequence one included).
public struct PPORollout: Sendable, Equatable {
    public var prompt: PPOPrompt
    public var response: [Int32]

    public init(prompt: PPOPrompt, response: [Int32]) { (self.prompt, self.response) = (prompt, response) }
}

/// The frozen judges and Llama 2's gate between them.
public struct RewardJudges {
    public let helpfulness: InferenceEngine
    public let safety: InferenceEngine?
    public let threshold: Double

    public init(helpfulness: InferenceEngine, safety: InferenceEngine?, threshold: Double) {
        (self.helpfulness, self.safety, self.threshold) = (helpfulness, safety, threshold)
    }

    public static func sigmoid(_ x: Double) -> Double { 1 / (1 + Foundation.exp(-x)) }

    /// Llama 2's gate: the safety score rules on a safety prompt, or when σ(r_s) is below the threshold.
    public static func safetyRules(safetyPrompt: Bool, safetyScore rs: Double, threshold: Double) -> Bool {
        safetyPrompt || sigmoid(rs) < threshold
    }

    /// The longest dialogue every judge reads: the shortest of their contexts.
    public var context: Int { min(helpfulness.model.config.maxSeqLen, safety?.model.config.maxSeqLen ?? .max) }

    /// R_c = σ(r_s) if the prompt is a safety prompt or σ(r_s) < threshold, else σ(r_h); with the raw score
    /// picked and which judge gave it.
    public func judge(_ tokens: [Int32], safetyPrompt: Bool) throws -> (score: Double, raw: Double, judge: String) {
        if let safety {
            let rs = Double(try safety.reward(tokens))
            if Self.safetyRules(safetyPrompt: safetyPrompt, safetyScore: rs, threshold: threshold) {
                return (Self.sigmoid(rs), rs, "safety")
            }
        }
        let rh = Double(try helpfulness.reward(tokens))
        return (Self.sigmoid(rh), rh, "helpfulness")
    }
}

/// What one iteration measured, over all ranks: its rollouts (collection) and its updates.
public struct PPOIterationStats: Sendable, Codable {
    public var iteration = 0
    public var rawReward = 0.0
    public var whitenedReward = 0.0
    /// Σ_t (log π_old − log π_ref) per sequence, averaged.
    public var kl = 0.0
    /// Of the tempered distribution sampled from, per token.
    public var entropy = 0.0
    public var responseLength = 0.0
    public var generationSeconds = 0.0
    public var scoringSeconds = 0.0
    public var trainingSeconds = 0.0
    /// Of the updates, per response token: the share the policy clip held, ½ (log π_θ − log π_old)², the value loss.
    public var clipFraction = 0.0
    public var approximateKL = 0.0
    public var valueLoss = 0.0
}

/// A held-out evaluation: one response per finetune.eval_data prompt, the same sampling streams every time.
public struct PPOEvaluation: Sendable, Codable {
    public var afterIteration = 0
    public var rawReward = 0.0
    public var kl = 0.0
    public var responseLength = 0.0
}

public final class PPOObjective: TrainingObjective {
    public let name = "PPO"
    let settings: PPOSettings
    let microBatch: Int
    let prompts: [PPOPrompt]
    let evalPrompts: [PPOPrompt]
    /// --rollouts: each iteration's rollouts, in file order.
    let fixed: [[PPORollout]]?
    /// The sampler's (nil with fixed rollouts).
    let tokenizer: Tokenizer?
    let padToken: Int32
    let log: (String) -> Void
    private var models: ModelSet?
    private var world: Communicator?
    private var directory: String?
    /// The sampler's engine over the policy (nil under generation_weights gathered with a sharded policy:
    /// then each sampling makes one over a gathered copy, and frees both after).
    private var generator: InferenceEngine?
    private var engineShape = (slots: 1, maxLength: 1)

    /// One rollout as the updates read it.
    struct Entry: Codable, Equatable {
        var prompt: [Int32]
        var response: [Int32]
        var old: [Double]
        var values: [Double]
        var advantages: [Double]
        var returns: [Double]
        var tokens: [Int32] { prompt + response }
    }

    /// A rank's rollouts of one iteration as kept in the checkpoint directory, with the world size they assume.
    struct SavedRollouts: Codable {
        var ranks: Int
        var entries: [Entry]
    }

    private var collected: (iteration: Int, entries: [Entry])?
    private var current: [Entry] = []
    /// Each iteration's statistics, as collected (rank 0 logs them), and the held-out evaluations.
    public private(set) var iterations: [PPOIterationStats] = []
    public private(set) var evaluations: [PPOEvaluation] = []
    /// This rank's sums over the current iteration's updates: clipped tokens, approximate KL, value loss, tokens.
    private var updateSums = [0.0, 0.0, 0.0, 0.0]
    private var updateStart = 0.0
    /// Each step's value loss and response tokens on this rank (the value loss is not the trainer's loss).
    public private(set) var valueLosses: [(loss: Double, tokens: Int)] = []

    public init(
        settings: PPOSettings, microBatch: Int, prompts: [PPOPrompt], evalPrompts: [PPOPrompt] = [],
        fixed: [[PPORollout]]?, tokenizer: Tokenizer?, padToken: Int32, log: @escaping (String) -> Void
    ) {
        precondition(fixed != nil || tokenizer != nil, "sampling needs the tokenizer")
        self.settings = settings
        self.microBatch = microBatch
        self.prompts = prompts
        self.evalPrompts = evalPrompts
        self.fixed = fixed
        self.tokenizer = tokenizer
        self.padToken = padToken
        self.log = log
    }

    public var tokensPerStep: Int { settings.miniBatchSize * (settings.maxTokens + 1) }
    public var batchDescription: String {
        "a mini-batch of \(settings.miniBatchSize) rollouts (\(settings.miniBatches) per iteration of \(settings.batchSize))"
    }

    public func accumulation(worldSize: Int, file: String?) throws -> Int {
        let s = settings
        func refuse(_ field: String, _ message: String) -> ConfigError {
            ConfigError(file: file ?? "-", field: field, message: message)
        }
        guard s.miniBatchSize % worldSize == 0, (s.miniBatchSize / worldSize) % microBatch == 0 else {
            throw refuse(
                "ppo.mini_batch_size",
                "\(s.miniBatchSize) rollouts do not split into \(worldSize) rank(s) × micro-batches of train.micro_batch \(microBatch); make it a multiple of \(worldSize * microBatch)"
            )
        }
        if let fixed, let short = fixed.firstIndex(where: { $0.count != s.batchSize }) {
            throw refuse(
                "ppo.batch_size",
                "is \(s.batchSize), but --rollouts iteration \(short + 1) holds \(fixed[short].count) rollouts")
        }
        return s.miniBatchSize / worldSize / microBatch
    }

    public func begin(models: ModelSet, world: Communicator, startStep: Int, checkpointDirectory: String?) throws {
        (self.models, self.world, directory) = (models, world, checkpointDirectory)
        if fixed == nil || !evalPrompts.isEmpty {
            // The cache holds the longest prompt and its response, not the whole context: 2·L·kv·hd values a
            // token per slot add up fast at 7B.
            let longest = (prompts + evalPrompts).map(\.ids.count).max() ?? 1
            let policy = models.primary
            engineShape = (
                min(64, max(1, settings.batchSize / world.size)),
                min(policy.config.maxSeqLen, longest + settings.maxTokens + 1)
            )
            switch (Self.isSharded(policy), settings.generationWeights) {
            case (false, _):
                log("ppo samples from the policy whole on every rank")
                generator = try InferenceEngine(
                    model: policy, slots: engineShape.slots, maxLength: engineShape.maxLength)
            case (true, .gathered):
                log("ppo samples from the policy gathered whole for each sampling (ppo.generation_weights gathered)")
            case (true, .sharded):
                log(
                    "ppo samples from the policy through per-unit gathers in every forward, the ranks in lockstep (ppo.generation_weights sharded)"
                )
                generator = try InferenceEngine(
                    model: policy, slots: engineShape.slots, maxLength: engineShape.maxLength,
                    lockstep: { LockstepState(rawValue: Int(try world.allreduceMax(Double($0.rawValue)))) ?? .failed })
            }
        }
        // Part-way through an iteration: its rollouts, as this rank collected them.
        let iteration = startStep / settings.miniBatches
        if startStep % settings.miniBatches != 0 {
            guard let path = bufferPath(iteration: iteration, rank: world.rank),
                let data = FileManager.default.contents(atPath: path)
            else {
                throw TrainingError(
                    "resuming PPO at step \(startStep), part-way through iteration \(iteration + 1), needs that iteration's rollouts in \(bufferPath(iteration: iteration, rank: world.rank) ?? "the checkpoint directory"), which is missing; resume from a checkpoint at an iteration's start"
                )
            }
            let saved = try JSONDecoder().decode(SavedRollouts.self, from: data)
            guard saved.ranks == world.size else {
                throw TrainingError(
                    "\(path) was collected by \(saved.ranks) ranks; resume part-way through iteration \(iteration + 1) on \(saved.ranks), or from an iteration's start on any number"
                )
            }
            guard saved.entries.count == settings.batchSize / world.size else {
                throw TrainingError(
                    "\(path) holds \(saved.entries.count) rollouts, but ppo.batch_size \(settings.batchSize) on \(world.size) rank(s) gives each \(settings.batchSize / world.size); resume with the settings it was collected with"
                )
            }
            collected = (iteration, saved.entries)
        }
    }

    /// Removes this rank's kept rollouts of iterations before `iteration` that no checkpoint in the directory
    /// was saved part-way through (any of those may still be resumed from).
    private func removeUnneededRollouts(before iteration: Int, rank: Int) throws {
        guard let directory else { return }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let needed = Set(
            names.compactMap { name -> Int? in
                guard name.hasPrefix("step-"), let step = Int(name.dropFirst(5)), step % settings.miniBatches != 0
                else { return nil }
                return step / settings.miniBatches
            })
        for i in 0..<iteration where !needed.contains(i) {
            if let path = bufferPath(iteration: i, rank: rank), FileManager.default.fileExists(atPath: path) {
                try? FileManager.default.removeItem(atPath: path)
            }
        }
    }

    private func bufferPath(iteration: Int, rank: Int) -> String? {
        directory.map { String(format: "%@/ppo-rollouts-%06d-rank%05d.json", $0, iteration, rank) }
    }

    public func load(step k: Int, rank: Int, worldSize: Int) throws -> Double {
        let iteration = k / settings.miniBatches, j = k % settings.miniBatches
        if collected?.iteration != iteration {
            if collected != nil { try finishIteration() }
            if !evalPrompts.isEmpty, iteration == 0 || (settings.evalEvery > 0 && iteration % settings.evalEvery == 0) {
                try evaluate(afterIteration: iteration)
            }
            try collect(iteration)
            updateStart = monotonicSeconds()
        }
        let perRank = settings.miniBatchSize / worldSize
        current = Array(collected!.entries[(j * perRank)..<((j + 1) * perRank)])
        let tokens = current.reduce(0) { $0 + $1.response.count }
        valueLosses.append((0, tokens))
        return Double(tokens)
    }

    public func dataPosition(afterSteps steps: Int) -> String? {
        "iteration \(steps / settings.miniBatches + (steps % settings.miniBatches == 0 ? 0 : 1)) of \(settings.iterations)"
    }

    // MARK: - Rollouts

    /// The rollouts of this rank's positions of `iteration`.
    private func rollouts(_ iteration: Int, rank: Int, ranks: Int) throws -> [PPORollout] {
        let positions = Array(stride(from: rank, to: settings.batchSize, by: ranks))
        if let fixed { return positions.map { fixed[iteration][$0] } }
        // Position q of the iteration's order holds draw n = iteration·batch + order[q] of the prompt stream,
        // which walks the prompts in a new seeded permutation every epoch.
        let order = FeistelPermutation(
            count: settings.batchSize, seed: settings.seed &+ 0x5050_4F00 &+ UInt64(iteration))
        let draws = positions.map { iteration * settings.batchSize + order[$0] }
        let chosen = draws.map { n -> Int in
            let epoch = n / prompts.count
            return FeistelPermutation(count: prompts.count, seed: settings.seed &+ UInt64(epoch))[n % prompts.count]
        }
        return try sample(zip(chosen, draws).map { (prompts[$0], $0, $1) })
    }

    /// One response per (prompt, its index, stream number) from the policy as it is now; the stream is seeded
    /// by (seed, index, number), so it does not depend on the rank or the batch.
    private func sample(_ requests: [(prompt: PPOPrompt, index: Int, stream: Int)]) throws -> [PPORollout] {
        let options = SamplingOptions(
            temperature: settings.temperature, topP: 1, topK: 0, maxTokens: settings.maxTokens, stop: [],
            seed: settings.seed)
        let (engine, tokenizer) = (try generator ?? gatheredEngine(), self.tokenizer!)
        engine.repackWeights()
        let results = try BatchGenerator(engine: engine, tokenizer: tokenizer, options: options).run(
            requests.map { GenerationRequest(prompt: $0.index, sample: $0.stream, ids: $0.prompt.ids) })
        return zip(requests, results).map { request, result in
            PPORollout(prompt: request.prompt, response: result.ids + (result.finish == .eos ? [tokenizer.eosId] : []))
        }
    }

    /// An engine over a whole copy of the sharded policy, gathered a unit at a time (every rank at once); both
    /// are freed when the caller lets go of the engine.
    private func gatheredEngine() throws -> InferenceEngine {
        let policy = models!.primary
        let whole = try LlamaModel(config: policy.config, purpose: .inference)
        policy.forEachUnitForward { u, base in
            let unit = policy.layout.units[u]
            (whole.parameters.pointer + unit.lowerBound).update(from: base + unit.lowerBound, count: unit.count)
        }
        return try InferenceEngine(model: whole, slots: engineShape.slots, maxLength: engineShape.maxLength)
    }

    /// The model holds only this rank's pieces of its parameters (train.sharding full), so its forwards are
    /// collective: every rank must run as many.
    static func isSharded(_ model: LlamaModel) -> Bool { !model.parameterPieces.isWhole(of: model.layout.count) }

    /// The held-out prompts' mean raw reward and KL to the reference, one response each (this rank: prompts
    /// i ≡ rank mod N), the same streams every time. Every rank must call it.
    public func evaluate(afterIteration iteration: Int) throws {
        let world = world!, models = models!, n = evalPrompts.count
        var mine = Array(stride(from: world.rank, to: n, by: world.size))
        // Sharded models' forwards are collective: every rank scores as many, the last prompt again where it has
        // fewer, and leaves those out of the sums.
        let counted = mine.count
        if Self.isSharded(models.primary) {
            mine += [Int](repeating: n - 1, count: (n + world.size - 1) / world.size - counted)
        }
        let rollouts = try sample(mine.map { (evalPrompts[$0], $0, 1 << 40) })
        let policy = Array(try responseLogProbs(models.primary, rollouts).logprobs.prefix(counted))
        let reference = Array(try responseLogProbs(models["reference"], rollouts).logprobs.prefix(counted))
        let reward = try rawScores(rollouts).prefix(counted).reduce(0, +)
        var sums: [Double] = [
            reward, Self.klSum(policy, reference),
            Double(rollouts.prefix(counted).reduce(0) { $0 + $1.response.count }),
        ]
        try sums.withUnsafeMutableBufferPointer { try world.allreduceSum($0.baseAddress!, count: $0.count) }
        let total = Double(n)
        let e = PPOEvaluation(
            afterIteration: iteration, rawReward: sums[0] / total, kl: sums[1] / total,
            responseLength: sums[2] / total)
        evaluations.append(e)
        log(
            String(
                format:
                    "ppo held-out after %d iteration(s) | reward %.4f | KL %.4f per sequence | response %.1f tokens (%d prompts)",
                iteration, e.rawReward, e.kl, e.responseLength, evalPrompts.count))
    }

    /// The last collected iteration's update statistics over every rank, logged. Every rank must call it, once
    /// per iteration (the command calls it after the last).
    public func finishIteration() throws {
        var sums = updateSums
        updateSums = [0, 0, 0, 0]
        // Resumed part-way through an iteration there is no collection to add its updates to.
        guard !iterations.isEmpty else { return }
        try sums.withUnsafeMutableBufferPointer { try world!.allreduceSum($0.baseAddress!, count: $0.count) }
        let tokens = max(sums[3], 1)
        var stats = iterations[iterations.count - 1]
        (stats.clipFraction, stats.approximateKL, stats.valueLoss) = (
            sums[0] / tokens, sums[1] / tokens, sums[2] / tokens
        )
        stats.trainingSeconds = monotonicSeconds() - updateStart
        iterations[iterations.count - 1] = stats
        let total = stats.generationSeconds + stats.scoringSeconds + stats.trainingSeconds
        log(
            String(
                format:
                    "ppo iteration %d updates | clip fraction %.3f | approx KL %.5f | value loss %.4f | %.2f s: generation %.0f%%, scoring %.0f%%, training %.0f%%",
                stats.iteration, stats.clipFraction, stats.approximateKL, stats.valueLoss, total,
                100 * stats.generationSeconds / total, 100 * stats.scoringSeconds / total,
                100 * stats.trainingSeconds / total))
    }

    private func collect(_ iteration: Int) throws {
        let world = world!, models = models!
        let start = monotonicSeconds()
        let mine = try rollouts(iteration, rank: world.rank, ranks: world.size)
        let generated = monotonicSeconds()
        for r in mine where r.response.isEmpty || r.prompt.ids.isEmpty {
            throw TrainingError("PPO iteration \(iteration + 1): a rollout has an empty prompt or response")
        }
        let (policy, entropies) = try responseLogProbs(models.primary, mine, entropy: true)
        let reference = try responseLogProbs(models["reference"], mine).logprobs
        let values = try responseValues(models["value"], mine)
        let raw = try rawScores(mine)
        let whitened = try PPOMath.whiten(raw, world: world)
        var entries: [Entry] = []
        var advantages: [[Double]] = []
        for i in mine.indices {
            let rewards = PPOMath.tokenRewards(
                old: policy[i], reference: reference[i], score: whitened[i], klCoef: settings.klCoef)
            let a = PPOMath.advantages(rewards: rewards, values: values[i], gamma: settings.gamma, lambda: settings.lam)
            advantages.append(a)
            entries.append(
                Entry(
                    prompt: mine[i].prompt.ids, response: mine[i].response, old: policy[i], values: values[i],
                    advantages: [], returns: zip(a, values[i]).map(+)))
        }
        let flat = try PPOMath.whiten(advantages.flatMap { $0 }, world: world)
        var offset = 0
        for i in entries.indices {
            entries[i].advantages = Array(flat[offset..<(offset + advantages[i].count)])
            offset += advantages[i].count
        }
        collected = (iteration, entries)
        if let path = bufferPath(iteration: iteration, rank: world.rank) {
            try AtomicFile.write(
                try JSONEncoder().encode(SavedRollouts(ranks: world.size, entries: entries)), to: path)
            try removeUnneededRollouts(before: iteration, rank: world.rank)
        }
        // The iteration's statistics over every rank.
        let tokens = Double(mine.reduce(0) { $0 + $1.response.count })
        let entropy = entropies.reduce(0.0) { $0 + $1.reduce(0, +) }
        var sums: [Double] = [
            raw.reduce(0, +), whitened.reduce(0, +), Self.klSum(policy, reference), tokens, generated - start,
            monotonicSeconds() - generated, entropy,
        ]
        try sums.withUnsafeMutableBufferPointer { try world.allreduceSum($0.baseAddress!, count: $0.count) }
        let n = Double(settings.batchSize), ranks = Double(world.size)
        let stats = PPOIterationStats(
            iteration: iteration + 1, rawReward: sums[0] / n, whitenedReward: sums[1] / n, kl: sums[2] / n,
            entropy: sums[6] / max(sums[3], 1), responseLength: sums[3] / n, generationSeconds: sums[4] / ranks,
            scoringSeconds: sums[5] / ranks)
        iterations.append(stats)
        log(
            String(
                format:
                    "ppo iteration %d/%d | reward %.4f (whitened %.4f) | KL %.4f per sequence | entropy %.3f | response %.1f tokens | generation %.2f s, scoring %.2f s",
                // The whitened mean is 0 by construction; rounded, so that it never prints as −0.
                stats.iteration, settings.iterations, stats.rawReward, (stats.whitenedReward * 1e4).rounded() / 1e4 + 0,
                stats.kl, stats.entropy,
                stats.responseLength, stats.generationSeconds, stats.scoringSeconds))
    }

    /// Σ over sequences and tokens of log π − log π_ref.
    static func klSum(_ policy: [[Double]], _ reference: [[Double]]) -> Double {
        var sum = 0.0
        for (p, r) in zip(policy, reference) { for (a, b) in zip(p, r) { sum += a - b } }
        return sum
    }

    /// Padded rows of `sequences` (tokens), one micro-batch at a time, each forward followed by `read(b, row
    /// offset)` for the micro-batch's members. A sharded model's forwards gather collectively, so every rank
    /// must pass as many sequences: collection gives each the same share, and the held-out evaluation pads.
    private func forEachForward(
        _ model: LlamaModel, _ sequences: [[Int32]], _ read: (_ member: Int, _ length: Int) throws -> Void
    ) throws {
        for start in stride(from: 0, to: sequences.count, by: microBatch) {
            let members = Array(sequences[start..<min(start + microBatch, sequences.count)])
            let length = members.map(\.count).max()!
            guard length <= model.config.maxSeqLen else {
                throw TrainingError(
                    "a PPO rollout of \(length) tokens is longer than the model's max_seq_len \(model.config.maxSeqLen); shorten the prompts or ppo.max_tokens"
                )
            }
            var tokens: [Int32] = []
            for m in members { tokens += m + [Int32](repeating: padToken, count: length - m.count) }
            _ = try model.forward(
                tokens: tokens, targets: tokens.map { _ in LlamaModel.ignoreIndex }, batch: members.count,
                seqLen: length)
            for b in members.indices { try read(start + b, length) }
        }
    }

    /// log_softmax(logits / T) at each response token, per rollout; with `entropy`, also the entropy of
    /// softmax(logits / T) at each.
    func responseLogProbs(
        _ model: LlamaModel, _ rollouts: [PPORollout], entropy: Bool = false
    ) throws -> (logprobs: [[Double]], entropies: [[Double]]) {
        var out = [[Double]](repeating: [], count: rollouts.count)
        var entropies = [[Double]](repeating: [], count: entropy ? rollouts.count : 0)
        let V = model.config.vocabSize, T = settings.temperature
        try forEachForward(model, rollouts.map { $0.prompt.ids + $0.response }) { i, length in
            let logits = model.logits, r = rollouts[i], b = i % microBatch
            for t in r.response.indices {
                let row = UnsafeBufferPointer(
                    rebasing: logits[((b * length + r.prompt.ids.count - 1 + t) * V)...].prefix(V))
                guard entropy else {
                    out[i].append(Sampler.logSoftmax(row, at: Int(r.response[t]), temperature: T))
                    continue
                }
                let (logprob, h) = Sampler.logSoftmaxAndEntropy(row, at: Int(r.response[t]), temperature: T)
                out[i].append(logprob)
                entropies[i].append(h)
            }
        }
        return (out, entropies)
    }

    /// The raw score R_c picks for each rollout: the safety model's on a safety prompt or when σ(r_s) is below
    /// ppo.safety_threshold, else the helpfulness model's; each read at the last token of a batched forward.
    func rawScores(_ rollouts: [PPORollout]) throws -> [Double] {
        func scores(_ model: LlamaModel) throws -> [Double] {
            var out = [Double](repeating: 0, count: rollouts.count)
            try forEachForward(model, rollouts.map { $0.prompt.ids + $0.response }) { i, length in
                let r = rollouts[i], last = r.prompt.ids.count + r.response.count - 1
                out[i] = Double(model.outputs(of: .score)[(i % microBatch) * length + last])
            }
            return out
        }
        let helpfulness = try scores(models!["reward"])
        guard let safetyModel = models!.optional("safety_reward") else { return helpfulness }
        let safety = try scores(safetyModel)
        return rollouts.indices.map { i in
            RewardJudges.safetyRules(
                safetyPrompt: rollouts[i].prompt.safety, safetyScore: safety[i], threshold: settings.safetyThreshold)
                ? safety[i] : helpfulness[i]
        }
    }

    /// The value head at each position that predicts a response token, per rollout.
    func responseValues(_ model: LlamaModel, _ rollouts: [PPORollout]) throws -> [[Double]] {
        var out = [[Double]](repeating: [], count: rollouts.count)
        try forEachForward(model, rollouts.map { $0.prompt.ids + $0.response }) { i, length in
            let v = model.outputs(of: .value), r = rollouts[i], b = i % microBatch
            out[i] = r.response.indices.map { Double(v[b * length + r.prompt.ids.count - 1 + $0]) }
        }
        return out
    }

    // MARK: - Updates

    public func microStep(_ m: Int, models: ModelSet, scale: Float, gradientsReady: ((Int) -> Void)?) throws -> Double {
        let members = Array(current[(m * microBatch)..<min((m + 1) * microBatch, current.count)])
        let length = members.map(\.tokens.count).max()!
        var tokens: [Int32] = []
        for e in members { tokens += e.tokens + [Int32](repeating: padToken, count: length - e.tokens.count) }
        let ignore = tokens.map { _ in LlamaModel.ignoreIndex }
        // The policy: new log-probs, the clipped surrogate, and d loss / d logits written over the logits.
        let policy = models.primary, V = policy.config.vocabSize, T = settings.temperature
        _ = try policy.forward(tokens: tokens, targets: ignore, batch: members.count, seqLen: length)
        var loss = 0.0
        // Each response row's softmax normalizer, read once: for its new log-prob here and its gradient below.
        var coefficients: [(row: Int, token: Int, c: Double, top: Double, total: Double)] = []
        let logits = policy.logits
        for (b, e) in members.enumerated() {
            let rows = e.response.indices.map { b * length + e.prompt.count - 1 + $0 }
            let normalizers = rows.map {
                Sampler.normalizer(UnsafeBufferPointer(rebasing: logits[($0 * V)..<(($0 + 1) * V)]), temperature: T)
            }
            let new = zip(rows, e.response).enumerated().map { t, pair in
                (Double(logits[pair.0 * V + Int(pair.1)]) - normalizers[t].top) / T
                    - Foundation.log(normalizers[t].total)
            }
            let terms = PPOMath.policyLoss(new: new, old: e.old, advantages: e.advantages, clip: settings.clip)
            loss += terms.loss
            updateSums[0] += Double(terms.clipped)
            updateSums[1] += terms.approximateKL
            updateSums[3] += Double(e.response.count)
            for (t, row) in rows.enumerated() {
                coefficients.append(
                    (row, Int(e.response[t]), terms.gradient[t], normalizers[t].top, normalizers[t].total))
            }
        }
        try policy.backward(
            heads: [
                .lm: .given { outputs in
                    // d(c · log_softmax(z / T)[y]) / dz = c (onehot(y) − softmax(z / T)) / T; zero elsewhere.
                    // Each counted row is rewritten in place (element k of the gradient needs only z_k and the
                    // row's normalizer, taken from these same logits above); every other row's gradient is zero.
                    var counted = [Bool](repeating: false, count: outputs.count / V)
                    for (row, token, c, top, sum) in coefficients {
                        counted[row] = true
                        let z = UnsafeMutableBufferPointer(rebasing: outputs[(row * V)..<((row + 1) * V)])
                        let k0 = Double(scale) * c / T
                        for k in 0..<V {
                            let p = Foundation.exp((Double(z[k]) - top) / T) / sum
                            z[k] = Float(k0 * ((k == token ? 1 : 0) - p))
                        }
                    }
                    for (row, keep) in counted.enumerated() where !keep {
                        UnsafeMutableBufferPointer(rebasing: outputs[(row * V)..<((row + 1) * V)]).update(repeating: 0)
                    }
                }
            ], gradientsReady: gradientsReady)
        // The value model: the clipped value loss, d loss / d V at the same positions.
        let value = models["value"]
        _ = try value.forward(tokens: tokens, targets: ignore, batch: members.count, seqLen: length)
        var valueGradient = [Float](repeating: 0, count: members.count * length)
        let v = value.outputs(of: .value)
        for (b, e) in members.enumerated() {
            let rows = e.response.indices.map { b * length + e.prompt.count - 1 + $0 }
            let terms = PPOMath.valueLoss(
                values: rows.map { Double(v[$0]) }, oldValues: e.values, returns: e.returns, clip: settings.valueClip)
            updateSums[2] += terms.loss
            valueLosses[valueLosses.count - 1].loss += terms.loss
            for (t, row) in rows.enumerated() { valueGradient[row] = Float(Double(scale) * terms.gradient[t]) }
        }
        try value.backward(heads: [.value: .given { outputs in _ = outputs.update(from: valueGradient) }])
        return loss
    }
}

extension PPOObjective {
    /// The stage's models beside the policy: the value model (trained, from ppo.value_model or the reward
    /// model, its score head becoming the value head, at ppo.value_lr), the reference (frozen, the policy's
    /// start) and the reward model(s) (frozen).
    /// `assumingPolicyShape` (plan, for models not on this machine): a directory that cannot be read is taken
    /// to hold a model of the policy's shape.
    public static func models(config: RunConfig, file: String, assumingPolicyShape: Bool = false) throws -> [ModelSpec]
    {
        guard let ppo = config.ppo else { throw ConfigError(file: file, field: "ppo", message: "is required for ppo") }
        func judgeConfig(_ directory: String, field: String) throws -> LlamaConfig {
            if assumingPolicyShape, (try? openWeightSource(directory)) == nil {
                var c = config.model
                c.heads = [.score]
                return c
            }
            let source = try openWeightSource(directory, purpose: "ppo.\(field)")
            guard source.shape(of: OutputHead.score.tensorName) != nil else {
                throw ConfigError(
                    file: file, field: "ppo.\(field)",
                    message: "\(directory) is a language model, not a reward model (no score.weight head)")
            }
            var c = source.config
            c.heads = [.score]
            return c
        }
        let t = config.train
        if t.learningRate == 0, (ppo.valueLR ?? 0) > 0 {
            throw ConfigError(
                file: file, field: "ppo.value_lr",
                message:
                    "is given, but train.lr is 0; the value model's rate is a multiple of the policy's, so give train.lr > 0"
            )
        }
        var value = ModelSpec.primary(config)
        var valueConfig = try judgeConfig(ppo.valueModel ?? ppo.rewardModel, field: "value_model")
        valueConfig.heads = [.value]
        (value.name, value.config, value.initFrom) = ("value", valueConfig, ppo.valueModel ?? ppo.rewardModel)
        value.learningRateRatio = t.learningRate > 0 ? (ppo.valueLR ?? t.learningRate) / t.learningRate : 1
        // Frozen models are sharded as train.sharding says (under `full`, gathered a unit at a time).
        let sharding = t.sharding
        var models = [
            value,
            ModelSpec.frozen(
                "reference", config: config.model, initFrom: config.finetune?.initFrom, sharding: sharding),
            ModelSpec.frozen(
                "reward", config: try judgeConfig(ppo.rewardModel, field: "reward_model"), initFrom: ppo.rewardModel,
                sharding: sharding),
        ]
        if let safety = ppo.safetyRewardModel {
            models.append(
                .frozen(
                    "safety_reward", config: try judgeConfig(safety, field: "safety_reward_model"), initFrom: safety,
                    sharding: sharding))
        }
        return models
    }
}
