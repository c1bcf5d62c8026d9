// `llama-train format` and `llama-train data stats`: what fine-tuning data becomes, and the paper's Table 26
// statistics of a preference set.
//
//   echo '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}' |
//       llama-train format --tokenizer tokenizer.model --template llama2-chat
//   llama-train data stats --data prefs.jsonl --tokenizer tokenizer.model
import Configuration
import FineTune
import Foundation
import Support
import Tokenizer

/// --template and --separator, as every command that turns dialogues into tokens takes them: the finetune
/// block's declarations, so their defaults are the config's.
enum TemplateFlags {
    static let flags = [
        Flag(FineTuneSettings.settings.setting(\.template)),
        Flag(FineTuneSettings.settings.setting(\.separator)),
    ]

    /// The template the flags name, the finetune block's default otherwise.
    static func template(_ args: Arguments, tokenizer: Tokenizer) throws -> ChatTemplate {
        var settings = FineTuneSettings(data: "")
        args.apply(FineTuneSettings.settings, to: &settings)
        return try ChatTemplate(settings.template, tokenizer: tokenizer, separator: settings.separator)
    }
}

enum DataCommands {
    static let formatSpec = CommandSpec(
        name: "format",
        summary:
            "JSON Lines of any fine-tuning format on stdin to {\"ids\", \"mask\"} on stdout, as training sees them",
        flags: [
            Flag("tokenizer", .text, "FILE", required: true, "the tokenizer.model")
        ] + TemplateFlags.flags,
        run: format)
    static let statsSpec = CommandSpec(
        name: "data stats",
        summary:
            "a preference file's Table 26 statistics (Llama 2): comparisons, turns, tokens per example, prompt and response",
        flags: [
            Flag("data", .text, "FILE.jsonl", required: true, "preference pairs in any supported format"),
            Flag("tokenizer", .text, "FILE", required: true, "the tokenizer.model"),
        ] + TemplateFlags.flags,
        run: stats)

    static func template(_ args: Arguments) throws -> ChatTemplate {
        try TemplateFlags.template(args, tokenizer: try Tokenizer(path: try args.require("tokenizer")))
    }

    /// Each line in any format: an SFT dialogue gives one object with mask 1 on the assistant's tokens; a
    /// preference pair gives two (chosen, then rejected) with mask 1 on the last token, where the reward is read.
    static func format(_ args: inout Arguments) throws {
        let template = try template(args)
        func emit(_ object: [String: Any]) throws {
            FileHandle.standardOutput.write(
                try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) + Data("\n".utf8))
        }
        try TextLines.forEach(descriptor: 0, source: "standard input") { n, line in
            if line.allSatisfy(\.isWhitespace) { return }
            guard let o = JSONLines.object(line), let format = DialogueData.format(of: o) else {
                throw UsageError(
                    "standard input line \(n): not an SFT example or preference pair of a supported format",
                    command: "format")
            }
            switch try DialogueData.example(o, format) {
            case let .dialogue(d):
                let (ids, answer) = template.encode(d)
                try emit(["ids": ids.map(Int.init), "mask": answer.map { $0 ? 1 : 0 }, "line": n])
            case let .preference(chosen, rejected, rating):
                for (side, d) in [("chosen", chosen), ("rejected", rejected)] {
                    let ids = template.encode(d).tokens
                    try emit([
                        "ids": ids.map(Int.init), "mask": ids.indices.map { $0 == ids.count - 1 ? 1 : 0 }, "line": n,
                        "side": side,
                        "rating": rating.label,
                    ])
                }
            }
        }
    }

    static func stats(_ args: inout Arguments) throws {
        let template = try template(args)
        let path = try args.require("data")
        let (format, examples) = try DialogueData.load(path, preferences: true, log: { print($0) })
        var turns = 0.0, example = 0.0, prompt = 0.0, response = 0.0
        var count = 0
        for (_, item) in examples {
            guard case let .preference(chosen, rejected, _) = item else { continue }
            count += 1
            turns += Double(chosen.exchanges)
            for d in [chosen, rejected] {
                // The prompt is everything before the last assistant turn; the response is that turn.
                let whole = template.encode(d).tokens.count
                let answer = template.answer(d.turns.last!.content).count
                example += Double(whole) / 2
                prompt += Double(whole - answer) / 2
                response += Double(answer) / 2
            }
        }
        let c = Double(max(count, 1))
        let row: [String: Any] = [
            "file": path, "format": format.rawValue, "template": template.kind.rawValue, "comparisons": count,
            "avg_turns_per_dialogue": turns / c, "avg_tokens_per_example": example / c,
            "avg_tokens_in_prompt": prompt / c, "avg_tokens_in_response": response / c,
        ]
        print("comparisons  turns/dialogue  tokens/example  tokens in prompt  tokens in response")
        print(
            String(
                format: "%11d  %14.1f  %14.1f  %16.1f  %18.1f", count, turns / c, example / c, prompt / c, response / c)
        )
        print(String(decoding: try JSONSerialization.data(withJSONObject: row, options: [.sortedKeys]), as: UTF8.self))
    }
}
