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

/// Where PPO samples from when train.sharding is `full` and no rank holds the whole policy.
public enum GenerationWeights: String, Codable, CaseIterable, Sendable, SettingChoice {
    /// The policy gathered whole on every rank for sampling and freed after: fast decoding, the whole model's
    /// memory for a while (Llama 2 consolidated the weights for the same reason).
    case gathered
    /// Every forward of sampling gathers the policy a unit at a time, the ranks in lockstep: the memory of
    /// training, and each decoded token moving every weight over the network (Llama 2 measured 20× slower).
    case sharded
}

/// How a dialogue becomes tokens (`finetune.template`, `--template`); the FineTune module's ChatTemplate
/// formats each.
public enum ChatTemplateKind: String, Codable, CaseIterable, Sendable, SettingChoice {
    /// Per exchange `<s> user <sep>` then `assistant </s>`.
    case separator
    /// Meta's `[INST]` format, so the model chats like Llama-2-chat.
    case llama2Chat = "llama2-chat"
}

extension ChatTemplateKind {
    /// The template as Jinja for transformers' `apply_chat_template` (tokenizer_config.json's `chat_template`),
    /// written so that it builds exactly the ids ChatTemplate does: Meta's `[INST]` format with each turn's
    /// content stripped, the system prompt folded into the first user turn, and no space before `</s>`
    /// (Hugging Face's Llama-2-chat template adds one). nil for the separator template, whose piece is ours.
    public var huggingFaceJinja: String? {
        guard self == .llama2Chat else { return nil }
        return "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
            + "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
            + "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
            + "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
            + "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
            + "{% if loop.index0 == 0 and system_message != false %}"
            + "{% set content = '<<SYS>>\\n' + system_message.strip() + '\\n<</SYS>>\\n\\n' + message['content'].strip() %}"
            + "{% else %}{% set content = message['content'].strip() %}{% endif %}"
            + "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content + ' [/INST]' }}"
            + "{% elif message['role'] == 'assistant' %}{{ ' ' + content + eos_token }}{% endif %}{% endfor %}"
    }
}

/// The reward model's margin m(rating) of the ranking loss (`finetune.margin`): Llama 2, Table 27.
public enum MarginTable: String, Codable, CaseIterable, Sendable, SettingChoice {
    case none, small, large
}

extension Precision: SettingChoice {}
extension Recompute: SettingChoice {}
