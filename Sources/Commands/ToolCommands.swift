// `llama-train plan`, `plot` and `generate`: looking at a configuration, a run's metrics and a model.
import Checkpoint
import Configuration
import FineTune
import Foundation
import Inference
import Model
import Support
import Tokenizer
import Tools
import Training

enum ToolCommands {
    static let planSpec = CommandSpec(
        name: "plan",
        summary: """
            memory per rank, batch arithmetic and allreduce bytes of a config, without training
            with --simulate: predicted step time, exposed communication and efficiency from 1 to thousands of nodes
            """,
        flags: [
            Flag("config", .text, "FILE", "the run config (required without --simulate)"),
            Flag("ranks", .int(min: 1, max: 1 << 24), "N", default: "1", "data-parallel ranks"),
            Flag(
                "ranks-per-node", .int(min: 1, max: 4096), "K", default: "1",
                "ranks that share one node's memory (the trainer finds it with MPI_Comm_split_type)"),
            Flag(
                "checkpoints", .toggle,
                "count a checkpoint save's copy of each rank's shard (12 bytes per owned parameter)"),
            Flag("json", .toggle, "also print the plan as JSON"),
            Flag("simulate", .toggle, "the alpha-beta simulator instead of one plan"),
            Flag(
                "calibration", .text, "FILE",
                "--simulate: a lab.json of cluster/lab-scaling.sh, or a scaling.json of cluster/bench-scaling.sh"),
            Flag(
                "layout", .choice(UnitLayout.allCases.map(\.rawValue)), "", default: "balanced",
                "--simulate: how sharding gradients and full split units (flat: builds before balanced units)"),
            Flag(
                "node-tflops", .number(min: 0, inclusive: false, max: 1e6), "X", "--simulate: a target node's FLOP rate"
            ),
            Flag("link-gbps", .number(min: 0, inclusive: false, max: 1e6), "Y", "--simulate: its link bandwidth"),
            Flag("latency-us", .number(min: 0, inclusive: true, max: 1e7), "Z", "--simulate: its link latency"),
            Flag("configs", .list, "FILE", "--simulate: the configs to predict (default: the paper's four)"),
            Flag("max-ranks", .int(min: 1, max: 1 << 24), "N", default: "4096", "--simulate: the largest world size"),
            Flag(
                "threads-per-rank", .int(min: 1, max: 4096), "T", default: "1",
                "--simulate with --calibration: cores per rank"),
            Flag(
                "thread-efficiency", .number(min: 0, inclusive: false, max: 1), "E", default: "0.9",
                "--simulate: speed-up per added thread as a share of ideal (the default measured here)"),
        ] + TrainSettings.settings.flags,
        run: plan)
    static let plotSpec = CommandSpec(
        name: "plot",
        summary: "the loss and learning-rate curves of a run as SVG",
        flags: [
            Flag("metrics", .text, "FILE.jsonl", required: true, "a run's --metrics file"),
            Flag("out", .text, "FILE.svg", required: true, "the chart to write"),
            Flag("title", .text, "TEXT", "the chart's title"),
        ],
        run: plot)
    static let generateSpec = CommandSpec(
        name: "generate",
        summary: "sample text from a saved model (greedy when the temperature is 0)",
        flags: [
            Flag("checkpoint", .text, "DIR", required: true, "a Hugging Face directory written by --out or export"),
            Flag("prompt", .list, "TEXT", "prompts, one sample each (default: one from nothing)"),
            Flag(
                "max-tokens", .int(min: 1, max: 1 << 20), "N", default: "64",
                "tokens to add at most (the context caps it)"),
            Flag(
                "temperature", .number(min: 0, inclusive: true, max: 100), "T", default: "0.8",
                "sampling temperature"),
            Flag("top-p", .number(min: 0, inclusive: false, max: 1), "P", default: "0.9", "nucleus sampling"),
            Flag("seed", .int(min: 0, max: Int.max), "N", default: "1", "the sampling seed"),
            Flag(
                "template", .choice(["none"] + ChatTemplate.Kind.allCases.map(\.rawValue)), "", default: "none",
                "wrap each prompt as a user turn of a fine-tuned model's template and print its answer "
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

    static func plan(_ args: inout Arguments) throws {
        if args.flag("simulate") { return try SimulateCommand.run(&args) }
        guard args.string("config") != nil else { throw args.usage("--config is required (or give --simulate)") }
        let (config, path) = try PretrainCommand.loadConfig(args)
        let ranks = args.int(declared: "ranks")
        let json = args.flag("json")
        let perNode = args.int(declared: "ranks-per-node")
        let p = try TrainingPlan(
            config: config, ranks: ranks, ranksPerNode: perNode, checkpoints: args.flag("checkpoints"), file: path)
        let node = Int(clamping: ProcessInfo.processInfo.physicalMemory)
        func gib(_ bytes: Int) -> String { String(format: "%.2f GiB", Double(bytes) / 1_073_741_824) }
        let rows: [(String, String)] = [
            (
                "parameters",
                "\(p.parameters) (" + String(format: "%.2fB", Double(p.parameters) / 1e9)
                    + "; \(p.nonEmbeddingParameters) without the embedding)"
            ),
            ("ranks", "\(p.ranks)"),
            ("micro-batch", "\(p.microBatch) sequences of \(p.seqLen) tokens"),
            ("accumulation", "\(p.accumulationSteps) micro-steps per optimizer step"),
            ("tokens per step", "\(p.tokensPerStep)"),
            (
                "memory per rank",
                "\(gib(p.memoryPerRankBytes)) with sharding \(p.sharding): parameters \(gib(p.parameterBytes)), gradients \(gib(p.gradientBytes)), AdamW moments \(gib(p.optimizerBytes)), sharding buffers \(gib(p.shardingWorkBytes)), bf16 buffers \(gib(p.precisionWorkBytes)), activations \(gib(p.activationBytes)) (recompute \(p.recompute)), model I/O staging \(gib(p.ioStagingBytes)), checkpoint staging \(gib(p.checkpointStagingBytes))\(args.flag("checkpoints") ? "" : " (--checkpoints counts it)")"
            ),
            (
                "this node",
                "\(gib(node)) shared by \(perNode) rank(s): \(gib(node / perNode)) each; \(p.fitsThisNode ? "fits" : "does not fit")"
            ),
            (
                "by mode",
                ShardingMode.allCases.map { "\($0.rawValue) \(gib(p.memoryPerRankByMode[$0.rawValue] ?? 0))" }.joined(
                    separator: ", ")
                    + "; this machine has \(gib(Int(clamping: ProcessInfo.processInfo.physicalMemory)))"
            ),
            (
                "communication",
                "\(gib(p.communicationBytesPerRankPerStep)) in and out of each rank per step (gradients \(gib(p.allreduceBytesPerStep)) per rank)"
            ),
            ("FLOPs per token", String(format: "%.3g (6N + 6LTD)", p.flopsPerToken)),
        ]
        for (k, v) in rows { print("\(k.padding(toLength: 17, withPad: " ", startingAt: 0)) \(v)") }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(p), as: UTF8.self))
        }
    }

    static func plot(_ args: inout Arguments) throws {
        let metrics = try args.require("metrics")
        let out = try args.require("out")
        try PathClash.check(outputs: [.file("--out", out)], inputs: [("--metrics", metrics)])
        let title = args.string("title") ?? "loss and learning rate: \((metrics as NSString).lastPathComponent)"
        try AtomicFile.write(Data(try LossChart.svg(metricsPath: metrics, title: title).utf8), to: out)
        print("wrote \(out)")
    }

    static func generate(_ args: inout Arguments) throws {
        let directory = try args.require("checkpoint")
        let prompts = args.list("prompt")
        let maxTokens = args.int(declared: "max-tokens")
        let temperature = args.number(declared: "temperature")
        let topP = args.number(declared: "top-p")
        let seed = UInt64(args.int(declared: "seed"))
        let truncation = Truncation(rawValue: args.string(declared: "truncate"))!
        let model = try HuggingFace.loadModel(directory: directory)
        let tokenizer = try Tokenizer(path: directory + "/tokenizer.model")
        // Without --template (or with none) the prompt is text to continue.
        let template =
            args.string("template").map { $0 != "none" } == true
            ? try TemplateFlags.template(args, tokenizer: tokenizer) : nil
        if let path = args.string("logits") {
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
            return
        }
        for (i, prompt) in (prompts.isEmpty ? [""] : prompts).enumerated() {
            if let template {
                // A single user turn; the answer ends at </s>.
                // The prompt leaves room for one new token at least.
                let ids = try truncation.apply(
                    template.prompt(user: prompt), limit: model.config.maxSeqLen - 1, what: "prompt \(i + 1)")
                let answer = try Generator.generate(
                    model: model, tokenizer: tokenizer, promptIds: ids, maxTokens: maxTokens,
                    temperature: temperature, topP: topP, seed: seed &+ UInt64(i))
                print(
                    "--- \(template.kind.rawValue) \(i + 1)\n[user] \(prompt)\n[assistant] \(try tokenizer.decode(answer))"
                )
                continue
            }
            let text = try Generator.generate(
                model: model, tokenizer: tokenizer, prompt: prompt, maxTokens: maxTokens,
                temperature: temperature, topP: topP, seed: seed &+ UInt64(i), truncation: truncation,
                what: "prompt \(i + 1)")
            print("--- sample \(i + 1)\n\(text)")
        }
    }
}
