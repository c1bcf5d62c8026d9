// The words a config key may take, as enums: JSON and the command line spell each by its raw value, and a
// word an enum lacks is refused naming the key and every word it has (SettingChoice). Sharding, the chat
// template and the reward margin live here; Precision and Recompute are the Model module's own, adopted here.
//
// What this is not: what each choice does. The trainer, the FineTune module and the model act on them.
import Model
import Support

/// Sharded data parallelism (ZeRO's stages, FSDP): what each rank keeps of the 16 bytes per parameter.
public enum ShardingMode: String, Codable, CaseIterable, Sendable, SettingChoice {
    /// Replicated: every rank holds all parameters, gradients and AdamW moments; gradients are allreduced.
    case none
    /// ZeRO-1: each rank keeps the AdamW moments of its own range; gradients are reduce-scattered to their
    /// owners, each rank updates its range, and the parameters are allgathered.
    case optimizer
    /// ZeRO-2: also only the owned gradient range persists: each unit's gradients are reduce-scattered right
    /// after its backward, every micro-step.
    case gradients
    /// ZeRO-3 / FSDP: parameters too; each unit is allgathered before its forward and backward (the next one
    /// prefetched on a communication thread) and released after.
    case full
}

/// How a dialogue becomes tokens (`finetune.template`, `--template`); the FineTune module's ChatTemplate
/// formats each.
public enum ChatTemplateKind: String, Codable, CaseIterable, Sendable, SettingChoice {
    /// Per exchange `<s> user <sep>` then `assistant </s>`.
    case separator
    /// Meta's `[INST]` format, so the model chats like Llama-2-chat.
    case llama2Chat = "llama2-chat"
}

/// The reward model's margin m(rating) of the ranking loss (`finetune.margin`): Llama 2, Table 27.
public enum MarginTable: String, Codable, CaseIterable, Sendable, SettingChoice {
    case none, small, large
}

extension Precision: SettingChoice {}
extension Recompute: SettingChoice {}
