// `llama-train pretrain`: the training loop from the command line, under mpirun or alone.
//
//   llama-train pretrain --config configs/demo.json                         # one process
//   mpirun -np 2 llama-train pretrain --config configs/demo.json            # two ranks on this machine
//   mpirun --hostfile hosts -np 8 --map-by slot:PE=4 llama-train pretrain --config configs/llama2-7b.json
import Checkpoint
import Configuration
import Distributed
import FineTune
import Foundation
import Kernels
import Model
import Optim
import Support
import Tools
import Training

enum PretrainCommand {
    static let overrides: [(flag: String, apply: @Sendable (inout TrainSettings, String) throws -> Void)] = [
        ("steps", { $0.steps = try integer($1, "steps") }),
        ("micro-batch", { $0.microBatch = try integer($1, "micro-batch") }),
        ("global-batch-tokens", { $0.globalBatchTokens = try integer($1, "global-batch-tokens") }),
        ("warmup-steps", { $0.warmupSteps = try integer($1, "warmup-steps") }),
        ("seed", { $0.seed = UInt64(try integer($1, "seed")) }),
        ("lr", { $0.learningRate = try number($1, "lr") }),
        ("bucket-mb", { $0.bucketMB = try number($1, "bucket-mb") }),
        ("data", { $0.data = $1 }),
        ("tokenizer", { $0.tokenizer = $1 }),
        ("on-nonfinite", {
            guard let p = TrainSettings.NonFinitePolicy(rawValue: $1) else { throw UsageError(description: "--on-nonfinite is stop or skip") }
            $0.onNonFinite = p
        }),
    ]

    static func integer(_ text: String, _ flag: String) throws -> Int {
        guard let v = Int(text) else { throw UsageError(description: "--\(flag) expects an integer, got '\(text)'") }
        return v
    }

    static func number(_ text: String, _ flag: String) throws -> Double {
        guard let v = Double(text) else { throw UsageError(description: "--\(flag) expects a number, got '\(text)'") }
        return v
    }

    /// Reads the config, then applies command-line overrides of train settings.
    static func loadConfig(_ args: inout Arguments) throws -> (RunConfig, String) {
        let path = try args.require("config")
        var config = try RunConfig.load(path: path)
        for (flag, apply) in overrides {
            if let value = args.string(flag) { try apply(&config.train, value) }
        }
        return (config, path)
    }

    static func run(_ args: inout Arguments) throws {
        let (config, path) = try loadConfig(&args)
        let threads = try args.int("threads", default: 1)
        let options = try options(&args)
        try args.checkAllUsed()
        lm_set_blas_threads(Int32(threads))
        let world = try Communicator.world()
        let trainer = try Trainer(config: config, configPath: path, world: world, options: options)
        try trainer.run()
        if world.isRoot, let out = options.outputDirectory { print("saved the model to \(out)") }
    }

    /// The trainer's flags, shared by pretrain, sft and reward.
    static func options(_ args: inout Arguments) throws -> TrainOptions {
        var options = TrainOptions()
        options.outputDirectory = args.string("out")
        options.metricsPath = args.string("metrics")
        options.logEvery = try args.int("log-every", default: 1)
        options.checkpointDirectory = args.string("checkpoint-dir")
        options.checkpointEvery = try args.int("checkpoint-every", default: 0)
        options.keepCheckpoints = try args.int("keep", default: 2)
        options.backgroundSave = args.flag("background-save")
        options.resume = ResumeMode(args.string("resume") ?? "auto")
        options.stopAfter = try args.string("stop-after").map { try integer($0, "stop-after") }
        options.collectiveTimeout = try number(args.string("collective-timeout") ?? "300", "collective-timeout")
        if options.checkpointDirectory == nil && (options.checkpointEvery > 0 || options.stopAfter != nil || options.backgroundSave) {
            throw UsageError(description: "--checkpoint-every, --stop-after and --background-save need --checkpoint-dir")
        }
        return options
    }

    /// `llama-train export --checkpoint DIR --out HF_DIR`: a sharded checkpoint (any world size) to
    /// config.json + model.safetensors that transformers' LlamaForCausalLM loads.
    static func export(_ args: inout Arguments) throws {
        let checkpoint = try args.require("checkpoint")
        let out = try args.require("out")
        try args.checkAllUsed()
        let manifest = try readManifest(checkpoint)
        let world = try Communicator.world()
        let model = try LlamaModel(config: manifest.config.model)
        let optimizer = AdamW(layout: model.layout)
        let parent = (checkpoint as NSString).deletingLastPathComponent
        let store = try CheckpointStore(directory: parent.isEmpty ? "." : parent, keep: 2, background: false, world: world, log: { print($0) })
        _ = try store.resume(.path(checkpoint), model: model, optimizer: optimizer, config: manifest.config)
        try HuggingFace.save(config: model.config, layout: model.layout, parameters: model.parameters, directory: out)
        if let tokenizer = manifest.config.train.tokenizer, let bytes = FileManager.default.contents(atPath: tokenizer) {
            try AtomicFile.write(bytes, to: out + "/tokenizer.model")
        }
        print("exported step \(manifest.step) of \(checkpoint) to \(out)")
    }
}
