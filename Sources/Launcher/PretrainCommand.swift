// `llama-train pretrain`: the training loop from the command line, under mpirun or alone.
//
//   llama-train pretrain --config configs/demo.json                         # one process
//   mpirun -np 2 llama-train pretrain --config configs/demo.json            # two ranks on this machine
//   mpirun --hostfile hosts -np 8 --map-by slot:PE=4 llama-train pretrain --config configs/llama2-7b.json
import Distributed
import Foundation
import Kernels
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
        var options = PretrainOptions()
        options.outputDirectory = args.string("out")
        options.metricsPath = args.string("metrics")
        options.logEvery = try args.int("log-every", default: 1)
        try args.checkAllUsed()
        lm_set_blas_threads(Int32(threads))
        let world = try Communicator.world()
        let trainer = try Pretrainer(config: config, configPath: path, world: world, options: options)
        try trainer.run()
        if world.isRoot, let out = options.outputDirectory { print("saved the model to \(out)") }
    }
}
