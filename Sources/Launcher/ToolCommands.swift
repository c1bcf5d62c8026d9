// `llama-train plan`, `plot` and `generate`: looking at a configuration, a run's metrics and a model.
import Checkpoint
import Configuration
import FineTune
import Foundation
import Model
import Support
import Tokenizer
import Tools
import Training

enum ToolCommands {
    static func plan(_ args: inout Arguments) throws {
        if args.flag("simulate") { return try SimulateCommand.run(&args) }
        let (config, path) = try PretrainCommand.loadConfig(&args)
        let ranks = try args.int("ranks", default: 1)
        let json = args.flag("json")
        try args.checkAllUsed()
        let p = try TrainingPlan(config: config, ranks: ranks, file: path)
        func gib(_ bytes: Int) -> String { String(format: "%.2f GiB", Double(bytes) / 1_073_741_824) }
        let rows: [(String, String)] = [
            ("parameters", "\(p.parameters) (" + String(format: "%.2fB", Double(p.parameters) / 1e9) + "; \(p.nonEmbeddingParameters) without the embedding)"),
            ("ranks", "\(p.ranks)"),
            ("micro-batch", "\(p.microBatch) sequences of \(p.seqLen) tokens"),
            ("accumulation", "\(p.accumulationSteps) micro-steps per optimizer step"),
            ("tokens per step", "\(p.tokensPerStep)"),
            ("memory per rank", "\(gib(p.memoryPerRankBytes)): parameters \(gib(p.parameterBytes)), gradients \(gib(p.gradientBytes)), AdamW moments \(gib(p.optimizerBytes)), activations \(gib(p.activationBytes))"),
            ("allreduce", "\(gib(p.allreduceBytesPerStep)) of gradients per step; a ring moves \(gib(p.ringBytesPerRankPerStep)) in and out of each rank"),
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
        let title = args.string("title") ?? "loss and learning rate: \((metrics as NSString).lastPathComponent)"
        try args.checkAllUsed()
        try AtomicFile.write(Data(try LossChart.svg(metricsPath: metrics, title: title).utf8), to: out)
        print("wrote \(out)")
    }

    static func generate(_ args: inout Arguments) throws {
        let directory = try args.require("checkpoint")
        let prompts = args.list("prompt")
        let maxTokens = try args.int("max-tokens", default: 64)
        let temperature = Double(args.string("temperature") ?? "0.8") ?? -1
        let topP = Double(args.string("top-p") ?? "0.9") ?? -1
        let seed = UInt64(try args.int("seed", default: 1))
        try args.checkAllUsed()
        guard temperature >= 0, topP > 0, topP <= 1 else {
            throw UsageError(description: "--temperature must be ≥ 0 and --top-p in (0, 1]")
        }
        let model = try HuggingFace.loadModel(directory: directory)
        let tokenizer = try Tokenizer(path: directory + "/tokenizer.model")
        for (i, prompt) in (prompts.isEmpty ? [""] : prompts).enumerated() {
            let text = try Generator.generate(model: model, tokenizer: tokenizer, prompt: prompt, maxTokens: maxTokens,
                                              temperature: temperature, topP: topP, seed: seed &+ UInt64(i))
            print("--- sample \(i + 1)\n\(text)")
        }
    }
}
