// `llama-train pretrain`: the training loop from the command line, under mpirun or alone; and the flags
// every training stage (pretrain, sft, reward) shares.
//
//   llama-train pretrain --config configs/demo.json                         # one process
//   mpirun -np 2 llama-train pretrain --config configs/demo.json            # two ranks on this machine
//   mpirun --hostfile hosts -np 8 --map-by slot:PE=4 llama-train pretrain --config configs/llama2-7b.json
import Checkpoint
import Configuration
import Distributed
import Foundation
import Kernels
import Model
import Training

enum PretrainCommand {
    /// The flags of pretrain, sft and reward: the config, the train-block keys that declare a flag (they
    /// override the file; the effective config is validated as a whole after them), and the trainer's options.
    static let trainingFlags: [Flag] =
        [Flag("config", .text, "FILE", required: true, "the run config (model, train, finetune blocks)")]
        + TrainSettings.settings.flags + [
        Flag("threads", .int(min: 1, max: 4096), "N", "threads per rank: BLAS, oneDNN, attention and row-wise kernels (default 1)"),
        Flag("out", .text, "DIR", "write the final model here (Hugging Face layout) when the schedule completes"),
        Flag("metrics", .text, "FILE.jsonl", "one JSON object per step; appended to on resume"),
        Flag("log-every", .int(min: 1, max: Int.max), "N", "progress line every N steps (default 1)"),
        Flag("checkpoint-dir", .text, "DIR", "sharded checkpoints go here, and are resumed from"),
        Flag("checkpoint-every", .int(min: 0, max: Int.max), "N", "save every N steps (default 0: at the end and when stopped)"),
        Flag("keep", .int(min: 2, max: 1_000_000), "K", "committed checkpoints kept (default 2; a torn newest needs a predecessor)"),
        Flag("background-save", .toggle, "write checkpoints on a thread while training goes on"),
        Flag("resume", .text, "auto|none|PATH", "where to resume from (default auto: the newest that verifies)"),
        Flag("stop-after", .int(min: 1, max: Int.max), "N", "stop with a checkpoint after step N (exit code 75)"),
        Flag("collective-timeout", .number(min: 0, inclusive: true, max: 1e7), "SECONDS",
             "abort the job when a collective waits this long (default 300; 0 disables)"),
    ]

    static let spec = CommandSpec(
        name: "pretrain",
        summary: "data-parallel pretraining; run under mpirun for several ranks",
        flags: trainingFlags,
        run: run)

    /// Reads the config and applies the command line's overrides of the train block. The caller's stage edits
    /// (fine-tuning) come after; the Trainer validates the effective config as a whole.
    static func loadConfig(_ args: Arguments) throws -> (RunConfig, String) {
        let path = try args.require("config")
        var config = try RunConfig.load(path: path)
        applyOverrides(&config, args)
        return (config, path)
    }

    /// The train-block flags the command line gave, applied to `config`.
    static func applyOverrides(_ config: inout RunConfig, _ args: Arguments) {
        args.apply(TrainSettings.settings, to: &config.train)
        if config.finetune != nil { args.apply(FineTuneSettings.settings, to: &config.finetune!) }
    }

    static func run(_ args: inout Arguments) throws {
        let (config, path) = try loadConfig(args)
        let options = try options(args)
        lm_set_blas_threads(Int32(args.int("threads", default: 1)))
        let world = try Communicator.world()
        let trainer = try Trainer(config: config, configPath: path, world: world, options: options, stage: .pretrain)
        try finish(trainer.run(), trainer: trainer, options: options)
    }

    /// The log line of a finished run, or the early stop's exit code.
    static func finish(_ outcome: TrainingOutcome, trainer: Trainer, options: TrainOptions) throws {
        guard outcome.completed else { throw StoppedEarly() }
        if trainer.world.isRoot, let out = options.outputDirectory { print("saved the model to \(out)") }
    }

    /// The trainer's options from the flags, shared by pretrain, sft and reward.
    static func options(_ args: Arguments) throws -> TrainOptions {
        var options = TrainOptions()
        options.outputDirectory = args.string("out")
        options.metricsPath = args.string("metrics")
        options.logEvery = args.int("log-every", default: 1)
        options.checkpointDirectory = args.string("checkpoint-dir")
        options.checkpointEvery = args.int("checkpoint-every", default: 0)
        options.keepCheckpoints = args.int("keep", default: 2)
        options.backgroundSave = args.flag("background-save")
        options.resume = ResumeMode(args.string("resume") ?? "auto")
        options.stopAfter = args.int("stop-after")
        options.collectiveTimeout = args.number("collective-timeout", default: 300)
        options.threads = args.int("threads", default: 1)
        if options.checkpointDirectory == nil && (options.checkpointEvery > 0 || options.stopAfter != nil || options.backgroundSave
                                                   || args.string("resume") != nil) {
            throw args.usage("--checkpoint-every, --stop-after, --background-save and --resume need --checkpoint-dir")
        }
        return options
    }
}
