// The `finetune` block of a run config: the data, starting point and shape of the fine-tuning stages
// (`llama-train sft` and `reward`). The stages themselves live in the FineTune module.
public struct FineTuneSettings: Codable, Equatable, Sendable {
    /// JSON Lines: {"prompt", "response"} for SFT; {"prompt", "chosen", "rejected", "rating"} for reward models.
    public var data: String
    /// Held-out examples evaluated at the end (reward models: accuracy per rating).
    public var evalData: String?
    /// The starting model: a Hugging Face directory (config.json + model.safetensors) or one of our checkpoints.
    public var initFrom: String?
    public var epochs: Int = 2
    /// How dialogues become tokens: `separator` (<s> prompt <sep> response </s>) or `llama2-chat` (Meta's
    /// [INST] format, so the model chats like Llama-2-chat).
    public var template = "separator"
    /// The separator piece between prompt and answer: a user-defined or control piece of the tokenizer.
    public var separator = "<sep>"
    /// Reward models: the margin m(rating) of the ranking loss (Llama 2 Table 27): none, small or large.
    public var margin = "small"
    /// Reward models: preference pairs per global batch (Llama 2: 512; 1024 sequences).
    public var pairsPerBatch = 512
    /// Reward models: the fraction of steps spent warming up (Llama 2: 3%).
    public var warmupFraction = 0.03

    enum CodingKeys: String, CodingKey, CaseIterable {
        case data, evalData = "eval_data", initFrom = "init_from", epochs, template, separator, margin
        case pairsPerBatch = "pairs_per_batch", warmupFraction = "warmup_fraction"
    }

    public init(data: String) { self.data = data }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        data = try c.decode(String.self, forKey: .data)
        evalData = try c.decodeIfPresent(String.self, forKey: .evalData)
        initFrom = try c.decodeIfPresent(String.self, forKey: .initFrom)
        epochs = try c.decodeIfPresent(Int.self, forKey: .epochs) ?? 2
        template = try c.decodeIfPresent(String.self, forKey: .template) ?? "separator"
        separator = try c.decodeIfPresent(String.self, forKey: .separator) ?? "<sep>"
        margin = try c.decodeIfPresent(String.self, forKey: .margin) ?? "small"
        pairsPerBatch = try c.decodeIfPresent(Int.self, forKey: .pairsPerBatch) ?? 512
        warmupFraction = try c.decodeIfPresent(Double.self, forKey: .warmupFraction) ?? 0.03
    }
}
