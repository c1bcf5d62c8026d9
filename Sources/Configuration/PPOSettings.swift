// The `ppo` block of a run config, for `llama-train ppo` (Llama 2 §3.2.3): the frozen judges, the value model's
// start, and the iteration's shape and coefficients, each key declared once below (Support/Settings.swift).
// The policy starts from finetune.init_from and the prompts are finetune.data (held-out ones finetune.eval_data),
// as every stage's start and data are; the policy's learning rate is train.lr, held constant.
// What this is not: the stage itself (Sources/FineTune/PPOObjective.swift).
import Support

public struct PPOSettings: Codable, Equatable, Sendable {
    public var rewardModel: String
    public var safetyRewardModel: String? = Self.declared(\.safetyRewardModel)
    public var valueModel: String? = Self.declared(\.valueModel)
    public var batchSize: Int = Self.declared(\.batchSize)
    public var miniBatchSize: Int = Self.declared(\.miniBatchSize)
    public var iterations: Int = Self.declared(\.iterations)
    public var evalEvery: Int = Self.declared(\.evalEvery)
    public var klCoef: Double = Self.declared(\.klCoef)
    public var clip: Double = Self.declared(\.clip)
    public var valueClip: Double = Self.declared(\.valueClip)
    public var gamma: Double = Self.declared(\.gamma)
    public var lam: Double = Self.declared(\.lam)
    public var maxTokens: Int = Self.declared(\.maxTokens)
    public var temperature: Double = Self.declared(\.temperature)
    public var valueLR: Double? = Self.declared(\.valueLR)
    public var safetyThreshold: Double = Self.declared(\.safetyThreshold)
    public var seed: UInt64 = Self.declared(\.seed)
    public var generationWeights: GenerationWeights = Self.declared(\.generationWeights)

    public init(rewardModel: String) { self.rewardModel = rewardModel }

    public init(from decoder: Decoder) throws {
        self.init(rewardModel: "")  // reward_model is required: decoding fails without it
        try Self.settings.decode(&self, from: decoder)
    }

    public func encode(to encoder: Encoder) throws { try Self.settings.encode(self, to: encoder) }

    static func declared<V>(_ keyPath: KeyPath<PPOSettings, V>) -> V { settings.defaultValue(keyPath) }

    /// Optimizer steps per iteration: one per mini-batch.
    public var miniBatches: Int { batchSize / miniBatchSize }

    public static let settings = SettingsBlock<PPOSettings>(
        "ppo",
        [
            Setting(
                required: \.rewardModel, "reward_model", placeholder: "DIR",
                help: "the helpfulness reward model (a `reward --out` directory), frozen"),
            Setting(
                \.safetyRewardModel, "safety_reward_model", nil, because: "helpfulness alone scores",
                placeholder: "DIR",
                help:
                    "the safety reward model, frozen: it scores prompts tagged \"safety\": true, and any response it scores below safety_threshold"
            ),
            Setting(
                \.valueModel, "value_model", nil, because: "Llama 2: the value model starts from the reward model",
                placeholder: "DIR",
                help: "where the value model starts: its trunk, and its score head as the value head"),
            Setting(
                \.batchSize, "batch_size", 512, because: "Llama 2: 512 prompts per iteration",
                .int(min: 1, max: 1 << 24), help: "rollouts per iteration, one per prompt"),
            Setting(
                \.miniBatchSize, "mini_batch_size", 64, because: "Llama 2: mini-batches of 64, one step each",
                .int(min: 1, max: 1 << 24), help: "rollouts per optimizer step; batch_size must be a multiple"),
            Setting(
                \.iterations, "iterations", 200, because: "Llama 2 ran 200–400", .int(min: 1, max: 1 << 24),
                flag: "iterations", help: "sample, score, update: the iterations to run"),
            Setting(
                \.evalEvery, "eval_every", 10, because: "a held-out curve of a few points per hundred iterations",
                .int(min: 0, max: 1 << 24),
                help:
                    "iterations between held-out evaluations of finetune.eval_data's prompts (0: before and after only)"
            ),
            Setting(
                \.klCoef, "kl_coef", 0.01, because: "Llama 2: β = 0.01 for 7B and 13B (0.005 for 34B and 70B)",
                .number(min: 0, inclusive: true, max: 100), help: "β, the per-token KL penalty to the reference"),
            Setting(
                \.clip, "clip", 0.2, because: "Llama 2 and PPO's paper: ε = 0.2",
                .number(min: 0, inclusive: false, max: 10), help: "ε, the policy ratio's clip"),
            Setting(
                \.valueClip, "value_clip", 0.2, because: "TRL's cliprange_value",
                .number(min: 0, inclusive: false, max: 1e6),
                help: "how far a value may move from the rollout's before its loss is clipped"),
            Setting(
                \.gamma, "gamma", 1.0, because: "no discount within a response",
                .number(min: 0, inclusive: true, max: 1),
                help: "γ, the discount of GAE"),
            Setting(
                \.lam, "lam", 0.95, because: "TRL's and InstructGPT's λ", .number(min: 0, inclusive: true, max: 1),
                help: "λ, GAE's trade of bias for variance"),
            Setting(
                \.maxTokens, "max_tokens", 128, because: "short responses on small machines",
                .int(min: 1, max: 1 << 20),
                flag: "max-tokens", help: "new tokens per response at most (as generate --max-tokens)"),
            Setting(
                \.temperature, "temperature", 1.0, because: "the policy's own distribution",
                .number(min: 0, inclusive: false, max: 100), flag: "temperature",
                help: "sampling temperature; every log-prob of the loss is log_softmax(logits / temperature)"),
            Setting(
                \.valueLR, "value_lr", nil, because: "train.lr, the policy's", .number(min: 0, inclusive: true, max: 1),
                help: "the value model's constant learning rate"),
            Setting(
                \.safetyThreshold, "safety_threshold", 0.15,
                because: "Llama 2: σ(r_s) < 0.15 hands the response to safety",
                .number(min: 0, inclusive: true, max: 1), help: "below this σ(safety score), safety scores the response"
            ),
            Setting(
                \.seed, "seed", 1, because: "any fixed seed", help: "the sampling and shuffling seed"),
            Setting(
                \.generationWeights, "generation_weights", .gathered,
                because: "Llama 2: sampling from sharded weights was 20× slower", encoding: .unlessDefault,
                help:
                    "under train.sharding full: gather the policy whole for sampling and free it after, or gather it a unit at a time in every forward (other modes hold it whole)"
            ),
        ])
}
