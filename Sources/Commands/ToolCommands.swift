// `llama-train plan` and `plot`: looking at a configuration and a run's metrics (`generate`: GenerateCommand.swift).
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
            Flag(
                "generate-batch", .int(min: 1, max: 1 << 20), "B", default: "32",
                "generation's memory for B sequences decoded at once"),
            Flag(
                "generate-length", .int(min: 1, max: 1 << 24), "T",
                "generation's memory for sequences of T tokens (default: max_seq_len)"),
            GenerateCommand.decodeWeightsFlag, GenerateCommand.kvCacheFlag,
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
    static func plan(_ args: inout Arguments) throws {
        if args.flag("simulate") { return try SimulateCommand.run(&args) }
        guard args.string("config") != nil else { throw args.usage("--config is required (or give --simulate)") }
        let (config, path) = try PretrainCommand.loadConfig(args)
        let ranks = args.int(declared: "ranks")
        let json = args.flag("json")
        let perNode = args.int(declared: "ranks-per-node")
        let p = try TrainingPlan(
            config: config, ranks: ranks, ranksPerNode: perNode, checkpoints: args.flag("checkpoints"), file: path,
            generationBatch: args.int(declared: "generate-batch"), generationLength: args.int("generate-length"),
            decodeWeights: GenerateCommand.decodeWeights(args), cache: GenerateCommand.kvCache(args))
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
            (
                "generation",
                "\(gib(p.generationMemoryBytes)) on one rank for \(p.generationBatch) sequences of \(p.generationLength) tokens: weights \(gib(4 * p.parameters)) and their decode packing \(gib(p.generationDecodeWeightsBytes)) (\(p.generationDecodeWeights)), KV cache \(gib(p.generationCacheBytes)) (2 · layers · kv_heads · head_dim · tokens · sequences, \(p.generationCache))"
            ),
        ]
        var stageRows: [(String, String)] = []
        if config.ppo != nil {
            // PPO holds five models at once: the policy and value model train, the reference and judges are frozen.
            let parts = Trainer.memoryParts(
                config: config,
                extraModels: try PPOObjective.models(config: config, file: path, assumingPolicyShape: true),
                ranks: ranks, checkpoints: args.flag("checkpoints"))
            let total = CheckedSize.sum(parts.compactMap(\.bytes))
            stageRows.append(
                (
                    "ppo models",
                    parts.map { "\($0.name == "model" ? "policy" : $0.name) \($0.bytes.map(gib) ?? "uncountable")" }
                        .joined(separator: ", ")
                        + "; \(total.map(gib) ?? "uncountable") per rank, \(total.map { $0 <= node / perNode ? "fits" : "does not fit" } ?? "does not fit") this node, before sampling's (below)"
                ))
            stageRows.append(("ppo sampling", ppoSampling(config, ranks: ranks, length: p.generationLength, gib)))
        }
        for (k, v) in rows + stageRows { print("\(k.padding(toLength: 17, withPad: " ", startingAt: 0)) \(v)") }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(p), as: UTF8.self))
        }
    }

    /// What sampling adds to a PPO rank beside its models, both ways under sharding full: the engine (its cache
    /// and decode packing) over a gathered copy of the policy, or over per-unit gathers (one layer packed).
    static func ppoSampling(_ config: RunConfig, ranks: Int, length: Int, _ gib: (Int) -> String) -> String {
        let c = config.model, ppo = config.ppo!
        let slots = min(64, max(1, ppo.batchSize / ranks))
        let shape =
            "\(slots) sequence\(slots == 1 ? "" : "s") of \(length) tokens (max_seq_len, or --generate-length: ppo holds its longest prompt and max_tokens)"
        func engine(sharded: Bool) -> Int {
            InferenceEngine.bytes(c, slots: slots, maxLength: length, decodeWeights: .fp32, sharded: sharded)
        }
        guard config.train.sharding == .full else {
            return "\(gib(engine(sharded: false))) per rank for \(shape) over the policy each rank holds whole"
        }
        let gathered = 4 * ParameterLayout(config: c).count + engine(sharded: false)
        let chosen = ppo.generationWeights == .gathered ? "gathered (chosen)" : "gathered"
        return
            "\(chosen) \(gib(gathered)) per rank while sampling (the whole policy and its decode packing), sharded\(ppo.generationWeights == .sharded ? " (chosen)" : "") \(gib(engine(sharded: true))) (one layer packed at a time, every weight over the network per decode step); \(shape)"
    }

    static func plot(_ args: inout Arguments) throws {
        let metrics = try args.require("metrics")
        let out = try args.require("out")
        try PathClash.check(outputs: [.file("--out", out)], inputs: [("--metrics", metrics)])
        let title = args.string("title") ?? "loss and learning rate: \((metrics as NSString).lastPathComponent)"
        try AtomicFile.write(Data(try LossChart.svg(metricsPath: metrics, title: title).utf8), to: out)
        print("wrote \(out)")
    }
}
