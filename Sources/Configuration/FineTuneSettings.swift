// The `finetune` block of a run config: the data, starting point and shape of the fine-tuning stages
// (`llama-train sft`, `reward` and `dpo`), each key declared once below (Support/Settings.swift) with its default
// and why. What this is not: the stages themselves, which live in the FineTune module.
import Support

public struct FineTuneSettings: Codable, Equatable, Sendable {
    // The initial values are the declared defaults; the declarations say what each key means.
    public var data: String
    public var evalData: String? = Self.declared(\.evalData)
    public var initFrom: String? = Self.declared(\.initFrom)
    public var epochs: Int = Self.declared(\.epochs)
    public var template: ChatTemplateKind = Self.declared(\.template)
    public var separator: String = Self.declared(\.separator)
    public var margin: MarginTable = Self.declared(\.margin)
    public var pairsPerBatch: Int = Self.declared(\.pairsPerBatch)
    public var warmupFraction: Double = Self.declared(\.warmupFraction)
    public var dpoBeta: Double = Self.declared(\.dpoBeta)

    public init(data: String) { self.data = data }

    public init(from decoder: Decoder) throws {
        self.init(data: "")  // data is required: decoding fails without it
        try Self.settings.decode(&self, from: decoder)
    }

    public func encode(to encoder: Encoder) throws { try Self.settings.encode(self, to: encoder) }

    static func declared<V>(_ keyPath: KeyPath<FineTuneSettings, V>) -> V { settings.defaultValue(keyPath) }

    public static let settings = SettingsBlock<FineTuneSettings>(
        "finetune",
        [
            Setting(
                required: \.data, "data", placeholder: "FILE.jsonl|FILE.parquet",
                help:
                    "JSON Lines or Parquet: {prompt, response} or {messages} for SFT; preference pairs for reward models and DPO"
            ),
            Setting(
                \.evalData, "eval_data", nil, because: "no held-out evaluation", placeholder: "FILE.jsonl|FILE.parquet",
                help: "reward models and DPO: held-out pairs evaluated at the end (accuracy per rating)"),
            Setting(
                \.initFrom, "init_from", nil, because: "fresh weights from train.seed", placeholder: "DIR",
                help: "the starting model: a Hugging Face directory or one of our checkpoint step directories"),
            Setting(
                \.epochs, "epochs", 2, because: "Llama 2's SFT ran 2 epochs", .int(min: 1, max: 1_000_000),
                help: "passes over the data; train.steps is derived from them"),
            Setting(
                \.template, "template", .separator, because: "works with any tokenizer holding the separator piece",
                flag: "template",
                help: "how dialogues become tokens: `<s> prompt <sep> response </s>`, or Meta's `[INST]` format"),
            Setting(
                \.separator, "separator", "<sep>", because: "the piece the demo's tokenizer is trained with",
                flag: "separator", placeholder: "S",
                help: "the separator template's piece: a user-defined or control piece of the tokenizer"),
            Setting(
                \.margin, "margin", .small, because: "the milder of Llama 2's two margins (Table 27)",
                help: "reward models: the margin m(rating) of the ranking loss"),
            Setting(
                \.pairsPerBatch, "pairs_per_batch", 512, because: "Llama 2: 512 pairs (1024 sequences) per batch",
                .int(min: 1, max: 1 << 24), help: "reward models and DPO: preference pairs per global batch"),
            Setting(
                \.warmupFraction, "warmup_fraction", 0.03, because: "Llama 2: 3% of the steps",
                .number(min: 0, inclusive: true, max: 1),
                help: "reward models and DPO: the share of steps spent warming up"),
            Setting(
                \.dpoBeta, "dpo_beta", 0.1, because: "DPO's paper and TRL: β = 0.1",
                .number(min: 0, inclusive: false, max: 1000), encoding: .unlessDefault,
                help: "DPO: β, how far the policy's log-ratio to the reference is scaled in the loss"),
        ])
}
