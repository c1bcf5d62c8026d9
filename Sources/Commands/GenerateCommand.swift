// `llama-train generate`: samples from a saved model through the KV-cached engine, continuously batched.
// `--prompt TEXT` prints samples; `--prompts FILE.jsonl` writes `--out FILE.jsonl`, one line per (prompt,
// sample) in that order, data-parallel under mpirun (prompt i on rank i mod N; each sample's stream is seeded by
// (seed, prompt, sample) and decoding is batch-invariant, so the file is the same for any rank count).
// `--logits` dumps the full forward's logits instead, to compare with another implementation.
import Dataset
import Distributed
import FineTune
import Foundation
import Inference
import Kernels
import Model
import Support
import Tokenizer

enum GenerateCommand {
    static let spec = CommandSpec(
        name: "generate",
        summary: "sample text from a saved model (greedy when the temperature is 0), KV-cached and batched",
        flags: [
            Flag("checkpoint", .text, "DIR", required: true, "a Hugging Face directory written by --out or export"),
            Flag("prompt", .list, "TEXT", "prompts, printed with their samples (default: one from nothing)"),
            Flag(
                "prompts", .text, "FILE.jsonl",
                "prompts as JSON Lines, {\"prompt\": TEXT} or {\"messages\": [...]} (with --template); needs --out"),
            Flag("out", .text, "FILE.jsonl", "the samples of --prompts, one JSON line per (prompt, sample)"),
            Flag("samples", .int(min: 1, max: 1 << 16), "K", default: "1", "samples per prompt"),
            Flag("logprobs", .toggle, "each token's log-probs in --out, beside the sums"),
            Flag(
                "max-tokens", .int(min: 1, max: 1 << 20), "N", default: "64",
                "tokens to add at most (the context caps it)"),
            Flag(
                "temperature", .number(min: 0, inclusive: true, max: 100), "T", default: "0.8",
                "sampling temperature"),
            Flag("top-p", .number(min: 0, inclusive: false, max: 1), "P", default: "0.9", "nucleus sampling"),
            Flag("top-k", .int(min: 0, max: Int(Int32.max)), "K", default: "0", "keep the K likeliest (0: all)"),
            Flag("stop", .list, "TEXT", "text that ends a sample (cut from its text)"),
            Flag("seed", .int(min: 0, max: Int.max), "N", default: "1", "the sampling seed"),
            Flag(
                "batch", .int(min: 1, max: 1 << 16), "N", default: "16",
                "sequences decoded at once per rank (a finished one's slot goes to the next prompt)"),
            Flag("threads", .int(min: 1, max: 4096), "T", default: "1", "threads per rank"),
            decodeWeightsFlag, kvCacheFlag,
            Flag(
                "template", .choice(["none"] + ChatTemplate.Kind.allCases.map(\.rawValue)), "", default: "none",
                "wrap each prompt as a user turn of a fine-tuned model's template and sample its answer "
                    + "(none: continue the text)"),
            TemplateFlags.flags[1],
            Flag(
                "truncate", .choice(Truncation.allCases.map(\.rawValue)), "", default: "refuse",
                "a prompt longer than the context: refuse it, or keep its last (left) or first (right) tokens"),
            Flag(
                "logits", .text, "FILE.jsonl",
                "write each prompt's ids and the logits at every position, one JSON line per prompt, instead of "
                    + "sampling (to compare with another implementation)"),
        ],
        run: generate)

    /// A prompt as given: its text (nil for messages) and its ids.
    struct Prompt {
        var text: String?
        var ids: [Int32]
    }

    static func generate(_ args: inout Arguments) throws {
        let directory = try args.require("checkpoint")
        let truncation = Truncation(rawValue: args.string(declared: "truncate"))!
        let threads = args.int(declared: "threads")
        // Without --template (or with none) the prompt is text to continue.
        let (model, tokenizer, template) = try load(args)
        if let path = args.string("logits") { return try dumpLogits(args, path, model, tokenizer, truncation) }
        let options = SamplingOptions(
            temperature: args.number(declared: "temperature"), topP: args.number(declared: "top-p"),
            topK: args.int(declared: "top-k"), maxTokens: args.int(declared: "max-tokens"), stop: args.list("stop"),
            seed: UInt64(args.int(declared: "seed")))
        let samples = args.int(declared: "samples")
        // The prompt leaves room for one new token at least.
        let limit = model.config.maxSeqLen - 1
        guard let file = args.string("prompts") else {
            guard args.string("out") == nil else { throw args.usage("--out writes the samples of --prompts FILE") }
            // Under mpirun one rank prints (the others would print the same samples).
            guard try Communicator.world().isRoot else { return }
            let texts = args.list("prompt").isEmpty ? [""] : args.list("prompt")
            let prompts = try texts.enumerated().map { i, text in
                let ids = template.map { $0.prompt(user: text) } ?? tokenizer.encode(text, bos: true)
                return Prompt(text: text, ids: try truncation.apply(ids, limit: limit, what: "prompt \(i + 1)"))
            }
            let results = try run(
                prompts, samples: samples, model: model, tokenizer: tokenizer, options: options,
                slots: args.int(declared: "batch"), threads: threads, decodeWeights: decodeWeights(args),
                cache: kvCache(args), world: nil)
            for r in results {
                let prompt = prompts[r.prompt].text ?? ""
                if let template {
                    // The answer as its own text: without the space that follows the prompt's last piece.
                    let answer = r.text.hasPrefix(" ") ? String(r.text.dropFirst()) : r.text
                    print("--- \(template.kind.rawValue) \(r.prompt + 1)\n[user] \(prompt)\n[assistant] \(answer)")
                } else {
                    print("--- sample \(r.prompt + 1)\(samples > 1 ? ".\(r.sample + 1)" : "")\n\(prompt)\(r.text)")
                }
            }
            return
        }
        guard let out = args.string("out") else { throw args.usage("--prompts needs --out FILE.jsonl") }
        guard args.list("prompt").isEmpty else { throw args.usage("give --prompt or --prompts, not both") }
        try PathClash.check(outputs: [.file("--out", out)], inputs: [("--prompts", file), ("--checkpoint", directory)])
        let prompts = try readPrompts(
            file, tokenizer: tokenizer, template: template, truncation: truncation, limit: limit)
        let world = try Communicator.world()
        let results = try run(
            prompts, samples: samples, model: model, tokenizer: tokenizer, options: options,
            slots: args.int(declared: "batch"), threads: threads, decodeWeights: decodeWeights(args),
            cache: kvCache(args), world: world)
        let logprobs = args.flag("logprobs")
        var lines = Data()
        for r in results {
            var o: [String: Any] = [
                "prompt_index": r.prompt, "sample_index": r.sample, "text": r.text, "ids": r.ids.map(Int.init),
                "finish_reason": r.finish.rawValue, "logprob": r.fullLogprobs.reduce(0, +),
                "sampling_logprob": r.logprobs.reduce(0, +),
            ]
            if let text = prompts[r.prompt].text { o["prompt"] = text }
            if logprobs {
                o["token_logprobs"] = r.fullLogprobs
                o["token_sampling_logprobs"] = r.logprobs
            }
            lines += try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]) + Data("\n".utf8)
        }
        guard let merged = try gatherRoundRobin(lines, items: prompts.count, linesPerItem: samples, world: world)
        else { return }
        try AtomicFile.write(merged, to: out)
        print("wrote \(out): \(prompts.count) prompt(s) × \(samples) sample(s)")
    }

    /// Rank 0's file from every rank's lines, where item i (with its `linesPerItem` lines, in order) was rank
    /// i mod N's: interleaved back into item order. Nil on the other ranks.
    static func gatherRoundRobin(_ mine: Data, items: Int, linesPerItem: Int, world: Communicator) throws -> Data? {
        let all = try world.size > 1 ? world.gather(bytes: [UInt8](mine)) : [[UInt8](mine)]
        guard let all else { return nil }
        var perRank = all.map { TextLines.lines($0, source: "rank output").makeIterator() }
        var merged = Data()
        for i in 0..<items {
            for _ in 0..<linesPerItem {
                guard let line = perRank[i % world.size].next(), case let .success(text) = line.text else {
                    throw UsageError("rank \(i % world.size) returned fewer lines than its share asks for")
                }
                merged += Data(text.utf8) + Data("\n".utf8)
            }
        }
        return merged
    }

    /// This rank's share of the prompts (all of them without a world), sampled; results in (prompt, sample)
    /// order with global prompt indices. A progress line on rank 0 (its share stands for every rank's).
    static func run(
        _ prompts: [Prompt], samples: Int, model: LlamaModel, tokenizer: Tokenizer, options: SamplingOptions,
        slots: Int, threads: Int, decodeWeights: DecodePrecision, cache: DecodePrecision = .fp32,
        world: Communicator?
    ) throws -> [GenerationResult] {
        let (rank, ranks) = (world?.rank ?? 0, world?.size ?? 1)
        let mine = stride(from: rank, to: prompts.count, by: ranks)
        let requests = mine.flatMap { i in
            (0..<samples).map { GenerationRequest(prompt: i, sample: $0, ids: prompts[i].ids) }
        }
        // The cache holds the longest prompt and its new tokens, not the whole context: a 7B model's 4096 tokens
        // at 16 sequences would be 68 GB.
        let longest = (requests.map(\.ids.count).max() ?? 0) + options.maxTokens
        let (batch, length) = (min(slots, max(1, requests.count)), min(model.config.maxSeqLen, longest))
        let needed = InferenceEngine.bytes(
            model.config, slots: batch, maxLength: length, threads: threads, decodeWeights: decodeWeights,
            cache: cache)
        let memory = Int(clamping: ProcessInfo.processInfo.physicalMemory)
        guard needed + 4 * model.layout.count <= memory else {
            throw UsageError(
                String(
                    format:
                        "%d sequences of %d tokens need %.1f GiB of KV cache and workspace beside the %.1f GiB model; this machine has %.1f GiB: lower --batch or --max-tokens",
                    batch, length, Double(needed) / 1_073_741_824, Double(4 * model.layout.count) / 1_073_741_824,
                    Double(memory) / 1_073_741_824))
        }
        let engine = try InferenceEngine(
            model: model, slots: batch, maxLength: length, threads: threads, decodeWeights: decodeWeights,
            cache: cache)
        let generator = BatchGenerator(engine: engine, tokenizer: tokenizer, options: options)
        let start = monotonicSeconds()
        var lastLine = start
        let results = try generator.run(requests) { finished in
            let now = monotonicSeconds()
            guard rank == 0, now - lastLine >= 2 || finished == requests.count else { return }
            lastLine = now
            let rate = Double(generator.decodedTokens) / max(now - start, 1e-9)
            let eta = Double(requests.count - finished) * (now - start) / Double(finished)
            FileHandle.standardError.write(
                Data(
                    String(
                        format: "generate: %d/%d samples%@, %.1f tokens/s, ETA %.0f s\n", finished, requests.count,
                        ranks > 1 ? " on rank 0 of \(ranks)" : "", rate, eta
                    ).utf8))
        }
        return results
    }

    static let decodeWeightsFlag = Flag(
        "decode-weights", .choice(DecodePrecision.allCases.map(\.rawValue)), "", default: "fp32",
        "the matrices decoding reads: fp32, or bf16 (half the bytes, so about twice the tokens/s at small batches; "
            + "each weight rounded to bf16, the arithmetic fp32)")

    static func decodeWeights(_ args: Arguments) -> DecodePrecision {
        DecodePrecision(rawValue: args.string("decode-weights") ?? "fp32") ?? .fp32
    }

    static let kvCacheFlag = Flag(
        "kv-cache", .choice(DecodePrecision.allCases.map(\.rawValue)), "", default: "fp32",
        "how the KV cache holds keys and values: fp32, or bf16 (half the memory; each rounded to bf16)")

    static func kvCache(_ args: Arguments) -> DecodePrecision {
        DecodePrecision(rawValue: args.string("kv-cache") ?? "fp32") ?? .fp32
    }

    /// --checkpoint's model and tokenizer, and --template's template (nil for none), with OpenBLAS at --threads:
    /// what generate and score start from.
    static func load(_ args: Arguments) throws -> (LlamaModel, Tokenizer, ChatTemplate?) {
        let directory = try args.require("checkpoint")
        lm_set_blas_threads(Int32(args.int(declared: "threads")))
        let model = try HuggingFace.loadModel(directory: directory)
        let tokenizer = try Tokenizer(path: directory + "/tokenizer.model")
        let template =
            args.string("template").map { $0 != "none" } == true
            ? try TemplateFlags.template(args, tokenizer: tokenizer) : nil
        return (model, tokenizer, template)
    }

    /// The objects of a JSON Lines input with their "file:line", or of a Parquet file's rows (every column it can
    /// read) with their "file row N"; the first line or row that is not one is refused.
    static func objects(_ file: String, flag: String) throws -> [(at: String, object: [String: Any])] {
        if ParquetFile.hasMagic(file) {
            let parquet = try ParquetFile(path: file)
            let rows = try ParquetRows(
                file: parquet, fields: parquet.readableFieldNames, groups: 0..<parquet.rowGroupCount)
            var objects: [(at: String, object: [String: Any])] = []
            while let row = try rows.next() {
                if let problem = row.problem { throw UsageError(problem) }
                objects.append(("\(file) row \(row.number)", row.object))
            }
            return objects
        }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: file)) } catch {
            throw UsageError("cannot read --\(flag) \(file): \(error.localizedDescription)")
        }
        return try JSONLines.lines(data, source: file).map { line in
            let at = "\(file):\(line.number)"
            guard let o = line.object else { throw UsageError("\(at): \(line.problem!)") }
            return (at, o)
        }
    }

    /// A line's {"messages"} as a dialogue, which needs a template to be read by the model.
    static func dialogue(_ o: [String: Any], at: String, template: ChatTemplate?) throws -> (ChatTemplate, Dialogue) {
        guard let template else {
            throw UsageError("\(at): {\"messages\"} needs --template (llama2-chat or separator)")
        }
        do { return (template, try DialogueData.messages(o["messages"])) } catch { throw UsageError("\(at): \(error)") }
    }

    static func readPrompts(
        _ file: String, tokenizer: Tokenizer, template: ChatTemplate?, truncation: Truncation, limit: Int
    ) throws -> [Prompt] {
        try objects(file, flag: "prompts").map { at, o in
            let ids: [Int32]
            var text: String?
            if let prompt = o["prompt"] as? String {
                text = prompt
                ids = template.map { $0.prompt(user: prompt) } ?? tokenizer.encode(prompt, bos: true)
            } else if o["messages"] != nil {
                let (template, dialogue) = try dialogue(o, at: at, template: template)
                guard !dialogue.endsWithAnswer else {
                    throw UsageError("\(at): the messages end with an assistant turn; end them with the user's")
                }
                ids = template.encode(dialogue).tokens
            } else {
                throw UsageError("\(at): needs {\"prompt\": TEXT} or {\"messages\": [...]}")
            }
            return Prompt(text: text, ids: try truncation.apply(ids, limit: limit, what: at))
        }
    }

    static func dumpLogits(
        _ args: Arguments, _ path: String, _ model: LlamaModel, _ tokenizer: Tokenizer, _ truncation: Truncation
    ) throws {
        let directory = try args.require("checkpoint"), prompts = args.list("prompt")
        try PathClash.check(outputs: [.file("--logits", path)], inputs: [("--checkpoint", directory)])
        var lines = Data()
        for (i, prompt) in (prompts.isEmpty ? [""] : prompts).enumerated() {
            let ids = try truncation.apply(
                tokenizer.encode(prompt, bos: true), limit: model.config.maxSeqLen, what: "prompt \(i + 1)")
            _ = try model.forward(
                tokens: ids, targets: [Int32](repeating: LlamaModel.ignoreIndex, count: ids.count), batch: 1,
                seqLen: ids.count)
            let v = model.config.vocabSize, logits = model.outputs(of: .lm)
            let rows = (0..<ids.count).map { t in (0..<v).map { Double(logits[t * v + $0]) } }
            lines += try JSONSerialization.data(withJSONObject: [
                "prompt": prompt, "ids": ids.map(Int.init), "logits": rows,
            ])
            lines += Data("\n".utf8)
        }
        try AtomicFile.write(lines, to: path)
    }
}
