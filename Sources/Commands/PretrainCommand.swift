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
        + TrainSettings.settings.flags + TrainOptions.settings.flags

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
        lm_set_blas_threads(Int32(options.threads))
        let world = try Communicator.world()
        let trainer = try Trainer(
            config: config, configPath: path, world: world, options: options, plan: StagePlan(.pretrain))
        try finish(trainer.run(), trainer: trainer, options: options)
    }

    /// The log line of a finished run, or the early stop's exit code.
    static func finish(_ outcome: TrainingOutcome, trainer: Trainer, options: TrainOptions) throws {
        guard outcome.completed else { throw StoppedEarly() }
        if trainer.world.isRoot, let out = options.outputDirectory { print("saved the model to \(out)") }
    }

    /// The trainer's options from the flags, shared by pretrain, sft and reward.
    static func options(_ args: Arguments) throws -> TrainOptions {
        // Every declared option is set (its default or the flag's value): TrainOptions' own initial values
        // are the library's, and the command line's defaults are the declarations'.
        let options = args.settings(TrainOptions.settings, from: TrainOptions())
        if options.checkpointDirectory == nil
            && (options.checkpointEvery > 0 || options.checkpointEveryMinutes > 0 || options.stopAfter != nil
                || options.backgroundSave
                || args.string("resume") != nil)
        {
            throw args.usage(
                "--checkpoint-every, --checkpoint-every-minutes, --stop-after, --background-save and --resume need --checkpoint-dir"
            )
        }
        return options
    }
}
