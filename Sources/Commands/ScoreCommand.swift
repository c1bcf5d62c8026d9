// `llama-train score`: the log-probs a language model gives to given completions, per token and summed, through
// the KV-cached engine's prefill. What DPO, PPO and multiple-choice evaluation are built on.
// {"prompt", "completion"}: the completion's tokens are those of prompt + completion encoded together after the
// prompt's own (a token across the boundary counts as the completion's), so the text is tokenized as the model
// read it in training. With --template, the prompt is a user turn and the completion an assistant turn with its
// </s>; {"messages"} scores every assistant turn, the template's mask. Data-parallel: line i on rank i mod N.
import Distributed
import FineTune
import Foundation
import Inference
import Kernels
import Model
import Support
import Tokenizer

enum ScoreCommand {
    static let spec = CommandSpec(
        name: "score",
        summary: "per-token and summed log-probs of given completions ({\"prompt\", \"completion\"} or messages)",
        flags: [
            Flag("checkpoint", .text, "DIR", required: true, "a language model's Hugging Face directory"),
            Flag("data", .text, "FILE.jsonl", required: true, "the completions to score"),
            Flag("out", .text, "FILE.jsonl", required: true, "each line back with \"logprob\", \"token_logprobs\""),
            Flag(
                "temperature", .number(min: 0, inclusive: false, max: 100), "T", default: "1",
                "log_softmax(logits / T): a policy's log-probs at its sampling temperature"),
            Flag("threads", .int(min: 1, max: 4096), "T", default: "1", "threads per rank"),
            Flag(
                "template", .choice(["none"] + ChatTemplate.Kind.allCases.map(\.rawValue)), "", default: "none",
                "the prompt as a user turn and the completion as the answer of a fine-tuned model's template"),
            TemplateFlags.flags[1],
            Flag(
                "truncate", .choice(Truncation.allCases.map(\.rawValue)), "", default: "refuse",
                "a sequence longer than the context: refuse it, or keep its last (left) or first (right) tokens"),
        ],
        run: score)

    static func score(_ args: inout Arguments) throws {
        let directory = try args.require("checkpoint"), file = try args.require("data"), out = try args.require("out")
        try PathClash.check(outputs: [.file("--out", out)], inputs: [("--data", file), ("--checkpoint", directory)])
        let threads = args.int(declared: "threads")
        let (model, tokenizer, template) = try GenerateCommand.load(args)
        let truncation = Truncation(rawValue: args.string(declared: "truncate"))!
        // Every line is checked on every rank, so a bad one is refused before any work, naming it.
        let items = try GenerateCommand.objects(file, flag: "data").map { at, o in
            var (tokens, scored) = try sequence(o, at: at, tokenizer: tokenizer, template: template)
            let kept = try truncation.apply(tokens, limit: model.config.maxSeqLen, what: at)
            if kept.count < tokens.count {
                scored = truncation == .left ? Array(scored.suffix(kept.count)) : Array(scored.prefix(kept.count))
                tokens = kept
            }
            if scored.first == true { scored[0] = false }  // cut to its first token, which nothing predicts
            guard scored.contains(true) else {
                throw UsageError("\(at): --truncate \(truncation.rawValue) leaves none of the completion to score")
            }
            return (object: o, tokens: tokens, scored: scored)
        }
        let world = try Communicator.world()
        let engine = try InferenceEngine(model: model, slots: 1, threads: threads)
        let temperature = args.number(declared: "temperature")
        var mine = Data()
        for i in stride(from: world.rank, to: items.count, by: world.size) {
            let (o, tokens, scored) = items[i]
            let logprobs = try engine.logprobs(tokens: tokens, scored: scored, temperature: temperature)
            var line = o
            line["logprob"] = logprobs.reduce(0, +)
            line["token_logprobs"] = logprobs
            line["tokens"] = logprobs.count
            mine += try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]) + Data("\n".utf8)
        }
        guard
            let merged = try GenerateCommand.gatherRoundRobin(
                mine, items: items.count, linesPerItem: 1, world: world)
        else { return }
        try AtomicFile.write(merged, to: out)
        print("wrote \(out): \(items.count) scored")
    }

    /// A line's tokens and which of them are scored.
    static func sequence(
        _ o: [String: Any], at: String, tokenizer: Tokenizer, template: ChatTemplate?
    ) throws -> (
        [Int32], [Bool]
    ) {
        if let prompt = o["prompt"] as? String, let completion = o["completion"] as? String {
            if let template {
                let p = template.prompt(user: prompt), c = template.answer(completion)
                return (p + c, [Bool](repeating: false, count: p.count) + [Bool](repeating: true, count: c.count))
            }
            let whole = tokenizer.encode(prompt + completion, bos: true), p = tokenizer.encode(prompt, bos: true)
            let shared = zip(whole, p).prefix { $0 == $1 }.count
            guard shared < whole.count else { throw UsageError("\(at): the completion is empty") }
            return (whole, whole.indices.map { $0 >= shared })
        }
        if o["messages"] != nil {
            let (template, dialogue) = try GenerateCommand.dialogue(o, at: at, template: template)
            let (tokens, answer) = template.encode(dialogue)
            guard answer.contains(true) else { throw UsageError("\(at): the messages have no assistant turn to score") }
            return (tokens, answer)
        }
        throw UsageError("\(at): needs {\"prompt\", \"completion\"} or {\"messages\": [...]}")
    }
}
