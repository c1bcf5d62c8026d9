// The `rejection_sampling` block of `llama-train rejection-sample --config FILE` (Llama 2 §3.2.3): which policy
// samples, which reward models judge, and how; each key declared once below (Support/Settings.swift).
// What this is not: the stage itself (Sources/Commands/RejectionSampleCommand.swift).
import Foundation
import Support

public struct RejectionSamplingSettings: Codable, Equatable, Sendable {
    public var policy: String
    public var rewardModel: String
    public var safetyRewardModel: String? = Self.declared(\.safetyRewardModel)
    public var prompts: String
    public var out: String
    public var samples: Int = Self.declared(\.samples)
    public var temperature: Double = Self.declared(\.temperature)
    public var topP: Double = Self.declared(\.topP)
    public var maxTokens: Int = Self.declared(\.maxTokens)
    public var seed: UInt64 = Self.declared(\.seed)
    public var template: ChatTemplateKind = Self.declared(\.template)
    public var separator: String = Self.declared(\.separator)
    public var safetyThreshold: Double = Self.declared(\.safetyThreshold)
    public var batch: Int = Self.declared(\.batch)

    public init(policy: String, rewardModel: String, prompts: String, out: String) {
        (self.policy, self.rewardModel, self.prompts, self.out) = (policy, rewardModel, prompts, out)
    }

    public init(from decoder: Decoder) throws {
        self.init(policy: "", rewardModel: "", prompts: "", out: "")  // the required keys fail decoding if absent
        try Self.settings.decode(&self, from: decoder)
    }

    public func encode(to encoder: Encoder) throws { try Self.settings.encode(self, to: encoder) }

    static func declared<V>(_ keyPath: KeyPath<RejectionSamplingSettings, V>) -> V { settings.defaultValue(keyPath) }

    /// Reads `{"rejection_sampling": {...}}` from `path`, naming the file and key of anything wrong.
    public static func load(path: String) throws -> RejectionSamplingSettings {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(file: path, field: "-", message: "cannot be read")
        }
        struct File: Decodable { let rejection_sampling: RejectionSamplingSettings }
        do {
            let s = try JSONDecoder().decode(File.self, from: data).rejection_sampling
            if let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                let block = o["rejection_sampling"] as? [String: Any]
            {
                try settings.checkKnown(block.keys, file: path)
            }
            try settings.checkRanges(s, file: path)
            return s
        } catch let error as ConfigError {
            throw ConfigError(file: path, field: error.field, message: error.message)
        } catch let DecodingError.keyNotFound(key, _) where key.stringValue == "rejection_sampling" {
            throw ConfigError(file: path, field: "rejection_sampling", message: "is required: {\"policy\": DIR, ...}")
        } catch {
            throw ConfigError(file: path, field: "rejection_sampling", message: "\(error)")
        }
    }

    public static let settings = SettingsBlock<RejectionSamplingSettings>(
        "rejection_sampling",
        [
            Setting(
                required: \.policy, "policy", placeholder: "DIR",
                help: "the model that samples: a Hugging Face directory (an SFT or RLHF model's --out)"),
            Setting(
                required: \.rewardModel, "reward_model", placeholder: "DIR",
                help: "the helpfulness reward model that judges (a `reward --out` directory)"),
            Setting(
                \.safetyRewardModel, "safety_reward_model", nil, because: "helpfulness alone judges",
                placeholder: "DIR",
                help:
                    "the safety reward model: it judges prompts tagged \"safety\": true, and any sample it scores below safety_threshold"
            ),
            Setting(
                required: \.prompts, "prompts", placeholder: "FILE.jsonl",
                help: "{\"prompt\"} or {\"messages\"} ending with a user turn, optionally with \"safety\": true"),
            Setting(
                required: \.out, "out", flag: "out", placeholder: "FILE.jsonl",
                help: "the best sample per prompt as SFT data ({\"messages\"} with its score); the report beside it"),
            Setting(
                \.samples, "samples", 4, because: "a small K; the paper's figures go to 100",
                .int(min: 1, max: 1 << 16),
                flag: "samples", help: "K, samples per prompt"),
            Setting(
                \.temperature, "temperature", 1.0, because: "the policy's own distribution (1.2–1.3 after RLHF)",
                .number(min: 0, inclusive: false, max: 100), flag: "temperature", help: "the sampling temperature"),
            Setting(
                \.topP, "top_p", 1.0, because: "the whole tempered distribution",
                .number(min: 0, inclusive: false, max: 1), flag: "top-p", help: "nucleus sampling"),
            Setting(
                \.maxTokens, "max_tokens", 128, because: "short answers on small machines", .int(min: 1, max: 1 << 20),
                flag: "max-tokens", help: "new tokens per sample at most"),
            Setting(\.seed, "seed", 1, because: "any fixed seed", flag: "seed", help: "the sampling seed"),
            Setting(
                \.template, "template", .separator, because: "works with any tokenizer holding the separator piece",
                flag: "template", help: "how the prompt and its answer become tokens, for the policy and the judges"),
            Setting(
                \.separator, "separator", "<sep>", because: "the piece the demo's tokenizer is trained with",
                flag: "separator", placeholder: "S", help: "the separator template's piece"),
            Setting(
                \.safetyThreshold, "safety_threshold", 0.15,
                because: "Llama 2: σ(r_s) < 0.15 hands the sample to safety",
                .number(min: 0, inclusive: true, max: 1), help: "below this σ(safety score), safety judges the sample"),
            Setting(
                \.batch, "batch", 16, because: "a batch that fits small machines", .int(min: 1, max: 4096),
                flag: "batch",
                help: "sequences decoded together per rank"),
        ])
}
