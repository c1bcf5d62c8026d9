// `llama-train rejection-sample --config FILE`: Llama 2's rejection sampling (§3.2.3). K samples per prompt
// from the policy, each judged by the reward model(s) through the R_c gate, and the best per prompt kept as SFT
// data for `llama-train sft`; with --previous, the best over this and earlier iterations' answers (picking only
// from the last iteration regressed in the paper). A report of the mean best reward among the first N samples,
// N = 1…K (the paper's Figure 7), as a table and an SVG beside --out.
//
// Data-parallel: prompt i on rank i mod N; each sample's stream is seeded by (seed, prompt, sample) and each
// answer is judged alone, so the output is the same for any rank count. Every rank holds the policy and the
// judges whole: at 70B that is the gathered-weights case Llama 2 describes, which --sharded generation
// (the PPO issue) is to address.
import Configuration
import Distributed
import FineTune
import Foundation
import Inference
import Model
import Support
import Tokenizer
import Tools

enum RejectionSampleCommand {
    static let spec = CommandSpec(
        name: "rejection-sample",
        summary: "K samples per prompt, judged by the reward model(s); the best per prompt as SFT data",
        flags: [
            Flag("config", .text, "FILE", required: true, "a JSON file with a rejection_sampling block"),
            Flag(
                "previous", .list, "FILE.jsonl",
                "earlier iterations' outputs: their answers are judged again beside this iteration's"),
            Flag("threads", .int(min: 1, max: 4096), "T", default: "1", "threads per rank"),
        ] + RejectionSamplingSettings.settings.flags,
        run: run)

    struct Item {
        var dialogue: Dialogue
        var safety: Bool
        /// The dialogue's canonical JSON (its turns), which --previous files are matched by.
        var key: String
    }

    static func messagesJSON(_ d: Dialogue, answer: String? = nil) -> [[String: String]] {
        (d.system.map { [["role": "system", "content": $0]] } ?? [])
            + d.turns.map { ["role": $0.role.rawValue, "content": $0.content] }
            + (answer.map { [["role": "assistant", "content": $0]] } ?? [])
    }

    static func key(_ d: Dialogue) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: messagesJSON(d), options: [.sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    static func run(_ args: inout Arguments) throws {
        let path = try args.require("config")
        var s = try RejectionSamplingSettings.load(path: path)
        args.apply(RejectionSamplingSettings.settings, to: &s)
        let previous = args.list("previous")
        let report = (s.out.hasSuffix(".jsonl") ? String(s.out.dropLast(6)) : s.out) + ".best-of-n.svg"
        let inputs =
            [("--config", path), ("policy", s.policy), ("reward_model", s.rewardModel), ("prompts", s.prompts)]
            + (s.safetyRewardModel.map { [("safety_reward_model", $0)] } ?? []) + previous.map { ("--previous", $0) }
        try PathClash.check(outputs: [.file("--out", s.out), .file("report", report)], inputs: inputs)
        let threads = args.int(declared: "threads")
        let policy = try HuggingFace.loadModel(directory: s.policy)
        guard policy.config.heads.contains(.lm) else {
            throw ConfigError(file: path, field: "rejection_sampling.policy", message: "\(s.policy) has no lm_head")
        }
        let tokenizer = try Tokenizer(path: s.policy + "/tokenizer.model")
        let template = try ChatTemplate(s.template, tokenizer: tokenizer, separator: s.separator)
        func judgeModel(_ directory: String, field: String) throws -> InferenceEngine {
            let model = try HuggingFace.loadModel(directory: directory)
            guard model.config.heads.contains(.score) else {
                throw ConfigError(
                    file: path, field: "rejection_sampling.\(field)",
                    message: "\(directory) is a language model, not a reward model (no score.weight head)")
            }
            return try InferenceEngine(model: model, slots: 1, threads: threads)
        }
        let judges = RewardJudges(
            helpfulness: try judgeModel(s.rewardModel, field: "reward_model"),
            safety: try s.safetyRewardModel.map { try judgeModel($0, field: "safety_reward_model") },
            threshold: s.safetyThreshold)
        let items = try readItems(s.prompts)
        let limit = policy.config.maxSeqLen - 1
        let prompts = try items.enumerated().map { i, item in
            GenerateCommand.Prompt(
                text: nil,
                ids: try Truncation.refuse.apply(
                    template.encode(item.dialogue).tokens, limit: limit, what: "\(s.prompts) prompt \(i + 1)"))
        }
        var earlier: [String: [(answer: String, source: String)]] = [:]
        for file in previous {
            for (at, o) in try GenerateCommand.objects(file, flag: "previous") {
                let d: Dialogue
                do { d = try DialogueData.messages(o["messages"]) } catch { throw UsageError("\(at): \(error)") }
                guard d.endsWithAnswer, let answer = d.turns.last?.content else {
                    throw UsageError("\(at): an earlier iteration's line ends with the assistant's answer")
                }
                earlier[key(try Dialogue(Array(messagesTurns(d).dropLast()))), default: []].append((answer, file))
            }
        }

        let world = try Communicator.world()
        let options = SamplingOptions(
            temperature: s.temperature, topP: s.topP, topK: 0, maxTokens: s.maxTokens, stop: [], seed: s.seed)
        let results = try GenerateCommand.run(
            prompts, samples: s.samples, model: policy, tokenizer: tokenizer, options: options, slots: s.batch,
            threads: threads, decodeWeights: .fp32, world: world)
        // Judge every answer alone; the best per prompt, the earliest candidate winning a tie: earlier
        // iterations' in the order given, then this one's samples by index.
        var lines = Data()
        var index = 0
        while index < results.count {
            let p = results[index].prompt, item = items[p]
            let mine = results[index..<(index + s.samples)]
            index += s.samples
            func answer(_ text: String) -> String {
                // The answer as its own text: without the space that follows the prompt's last piece.
                text.hasPrefix(" ") ? String(text.dropFirst()) : text
            }
            func judged(_ text: String) throws -> (score: Double, raw: Double, judge: String) {
                let d = try Dialogue(messagesTurns(item.dialogue) + [Turn(.assistant, text)])
                let tokens = try Truncation.left.apply(
                    template.encode(d).tokens, limit: judges.context, what: "prompt \(p + 1)")
                return try judges.judge(tokens, safetyPrompt: item.safety)
            }
            var candidates = try (earlier[item.key] ?? []).map { c in (c.answer, c.source, -1, try judged(c.answer)) }
            let current = try mine.map { r in (answer(r.text), "this iteration", r.sample, try judged(answer(r.text))) }
            candidates += current
            var best = candidates[0]
            for c in candidates.dropFirst() where c.3.score > best.3.score { best = c }
            var o: [String: Any] = [
                "messages": messagesJSON(item.dialogue, answer: best.0), "score": best.3.score,
                "reward": best.3.raw, "judge": best.3.judge, "prompt_index": p, "source": best.1,
                "sample_scores": current.map { $0.3.score },
            ]
            if best.2 >= 0 { o["sample_index"] = best.2 }
            if item.safety { o["safety"] = true }
            lines += try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]) + Data("\n".utf8)
        }
        guard
            let merged = try GenerateCommand.gatherRoundRobin(lines, items: items.count, linesPerItem: 1, world: world)
        else { return }
        try AtomicFile.write(merged, to: s.out)
        // The report: mean over prompts of the best R_c among this iteration's first N samples.
        let scores = TextLines.lines([UInt8](merged), source: s.out).compactMap { line -> [Double]? in
            guard case let .success(text) = line.text, let o = JSONLines.object(text) else { return nil }
            return o["sample_scores"] as? [Double]
        }
        let means = (1...s.samples).map { n in
            scores.map { $0.prefix(n).max() ?? 0 }.reduce(0, +) / Double(max(scores.count, 1))
        }
        print("best of N (mean over \(scores.count) prompts of the best R_c among the first N samples):")
        print("N      " + (1...s.samples).map { String(format: "%7d", $0) }.joined())
        print("R_c    " + means.map { String(format: "%7.4f", $0) }.joined())
        try AtomicFile.write(
            Data(BestOfNChart.svg(means: means, title: "rejection sampling: the best of N samples").utf8), to: report)
        print(
            "wrote \(s.out): the best of \(s.samples) sample(s) for \(scores.count) prompt(s); the report in \(report)")
        print(
            String(
                format: "{\"prompts\": %d, \"samples\": %d, \"best_of_1\": %.6f, \"best_of_k\": %.6f}", scores.count,
                s.samples, means.first ?? 0, means.last ?? 0))
    }

    /// A dialogue's turns with its system message first, as Dialogue's init takes them.
    static func messagesTurns(_ d: Dialogue) -> [Turn] { (d.system.map { [Turn(.system, $0)] } ?? []) + d.turns }

    static func readItems(_ file: String) throws -> [Item] {
        let items = try GenerateCommand.objects(file, flag: "prompts").map { at, o -> Item in
            let d: Dialogue
            if let prompt = o["prompt"] as? String {
                d = try Dialogue([Turn(.user, prompt)])
            } else if o["messages"] != nil {
                do { d = try DialogueData.messages(o["messages"]) } catch { throw UsageError("\(at): \(error)") }
                guard !d.endsWithAnswer else {
                    throw UsageError("\(at): the messages end with an assistant turn; end them with the user's")
                }
            } else {
                throw UsageError(
                    "\(at): needs {\"prompt\": TEXT} or {\"messages\": [...]}, optionally \"safety\": true")
            }
            if let tag = o["safety"], !(tag is Bool) {
                throw UsageError("\(at): \"safety\" is true or false")
            }
            return Item(dialogue: d, safety: o["safety"] as? Bool ?? false, key: key(d))
        }
        guard !items.isEmpty else { throw UsageError("\(file): no prompts") }
        return items
    }
}
